//! The Solace endpoint adapter: maps routed events to the records the host sends to a
//! Solace PubSub+ broker over AMQP 1.0 or MQTT 5 (upstream), and received records to events
//! (downstream). The SDK's [`topic`] module (`mediation_adapter_sdk::solace`, shared with the
//! host's Solace endpoint) holds the Solace topic rules, the subscription matcher
//! [`solace_topic_matches`] and the subscription translation [`solace_subscription_to_mqtt`].
//!
//! Records follow the record convention of `docs/mappings/endpoints.md`. The two transports
//! share their property mapping with the JMS and MQTT 5 adapters through the SDK's modules
//! [`amqp`] and [`mqtt`].
//!
//! # Settings
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `transport` | `amqp` | How the host's client talks to Solace: `amqp` (AMQP 1.0) or `mqtt` (MQTT 5). |
//! | `destination_kind` | `topic` | What events without a prefix are sent to: `topic` or `queue` (`queue` needs `amqp`). |
//! | `topic` | unset | The topic of events without a destination (`destination_kind = topic` only). |
//! | `queue` | unset | The queue of events without a destination (`destination_kind = queue` only). |
//! | `delivery_mode` | `persistent` | `persistent` (guaranteed, `:qos` `1`) or `direct` (`:qos` `0`, needs `mqtt`: Solace carries AMQP 1.0 as guaranteed messages only). |
//!
//! # Upstream: event to record
//!
//! The name is the event's destination, else setting `topic` or `queue`; with neither the
//! event fails as malformed (`no destination: the event has no destination and setting
//! `topic` is unset`, or `queue`). A name starting with `topic://` or `queue://` keeps that
//! kind; any other name has kind `destination_kind`. Topics must pass
//! [`topic::check_topic`] (not empty, at most 250 bytes and 128 levels, no U+0000, no
//! wildcard level `*`, `abc*` or `>`), queue names [`topic::check_queue`]; otherwise the event
//! fails as malformed, naming the topic or queue.
//!
//! - `amqp`: `destination` = `topic://<topic>` or `queue://<queue>`. Id → `id`, content type →
//!   `content_type`, `correlation-id` → `:correlation-id`, `reply-to` → `:reply-to` (an
//!   address, passed as it is), other headers → application properties (Solace user
//!   properties), as [`amqp`] describes. No JMS annotations: Solace does not need them.
//! - `mqtt`: `destination` = the plain topic; a `queue://` name fails as malformed (MQTT
//!   publishes to topics only) and the topic must also be a legal MQTT topic name (no `+`,
//!   `#`). `:qos` = `1` (`persistent`) or `0` (`direct`), written first. Content type → Content
//!   Type, id → user property `message-id`, `reply-to` → `:response-topic`, `correlation-id` →
//!   `:correlation-data`, other headers → user properties (UTF-8), as [`mqtt`] describes.
//! - A header whose name starts with `:` fails the event as malformed. The key is not
//!   carried. The payload is kept.
//!
//! Subscribe and unsubscribe items carry a Solace subscription in their destination (an
//! optional `topic://` prefix is removed; `queue://` fails as malformed). The output item
//! keeps the kind; its destination is `topic://<subscription>`
//! over `amqp` (checked by [`topic::check_subscription`]) and the MQTT filter from
//! [`solace_subscription_to_mqtt`] over `mqtt`. A subscription that cannot be expressed fails
//! as unsupported, an invalid one as malformed. Ack and resume items fail as unsupported.
//!
//! # Downstream: record to event
//!
//! - `amqp`: `destination` = the address without `topic://` or `queue://`; event header
//!   `solace-destination-kind` = `topic` or `queue` when the address had a prefix. `id`,
//!   `content_type` → the event's; `:correlation-id` → `correlation-id`, `:reply-to` →
//!   `reply-to`, `:timestamp` → `solace-timestamp`; every other `:` property is dropped;
//!   application properties → headers.
//! - `mqtt`: `destination` = the topic. `:response-topic` → `reply-to`, `:correlation-data` →
//!   `correlation-id`, user property `message-id` → id, Content Type → content type, other
//!   user properties → headers; `:qos`, `:retain` and every other `:` property are dropped.
//! - The event is flagged binary when the record is, or when its payload is not UTF-8.
//!
//! Items other than data items fail as unsupported downstream. In both directions the
//! output keeps the input's flags (binary unless a rule above sets it, ack requested),
//! sequence and client id: the host tracks items by them.

use mediation_adapter_sdk::solace as topic;
pub use mediation_adapter_sdk::solace::{SubscriptionError, solace_subscription_to_mqtt, solace_topic_matches};

use mediation_adapter_sdk::amqp::{self, AddressKind, Addressing};
use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Role, Settings};
use mediation_adapter_sdk::{BatchBuilder, Item, Kind, mqtt};

/// Which protocol the host's client speaks to Solace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// AMQP 1.0: addresses carry `topic://` or `queue://`.
    Amqp,
    /// MQTT 5: plain topics, QoS for guaranteed delivery.
    Mqtt,
}

/// Maps events to Solace records and back.
#[derive(Debug)]
pub struct Solace {
    /// The protocol of the host's client.
    transport: Transport,
    /// The kind of destinations without a prefix.
    kind: AddressKind,
    /// The topic or queue of events without a destination, of kind `kind`.
    destination: Option<String>,
    /// The `:qos` value of records over MQTT.
    qos: &'static str,
    /// `topic://` and `queue://`, the prefixes Solace's AMQP service understands.
    addressing: Addressing,
}

impl Adapter for Solace {
    const ROLE: Role = Role::Endpoint;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&["transport", "destination_kind", "topic", "queue", "delivery_mode"])?;
        let transport = match settings.choice("transport", &["amqp", "mqtt"], "amqp")? {
            "mqtt" => Transport::Mqtt,
            _ => Transport::Amqp,
        };
        let kind = match settings.choice("destination_kind", &["topic", "queue"], "topic")? {
            "queue" => AddressKind::Queue,
            _ => AddressKind::Topic,
        };
        if kind == AddressKind::Queue && transport == Transport::Mqtt {
            return Err(String::from(
                "setting `destination_kind`: `queue` needs `transport = amqp` (MQTT publishes to topics only)",
            ));
        }
        let qos = match settings.choice("delivery_mode", &["persistent", "direct"], "persistent")? {
            "direct" if transport == Transport::Amqp => {
                return Err(String::from(
                    "setting `delivery_mode`: `direct` needs `transport = mqtt` (Solace carries AMQP 1.0 as \
                     guaranteed messages only)",
                ));
            }
            "direct" => "0",
            _ => "1",
        };
        let (used, unused) = match kind {
            AddressKind::Topic => ("topic", "queue"),
            AddressKind::Queue => ("queue", "topic"),
        };
        if settings.get(unused).is_some() {
            return Err(format!(
                "setting `{unused}`: not used with `destination_kind = {}`; set `{used}` instead",
                kind.as_str()
            ));
        }
        let destination = settings.get(used).map(str::to_owned);
        if let Some(name) = &destination {
            let checked = match kind {
                AddressKind::Topic => topic::check_topic(name).and_then(|()| match transport {
                    Transport::Mqtt => mqtt::check_topic_name(name),
                    Transport::Amqp => Ok(()),
                }),
                AddressKind::Queue => topic::check_queue(name),
            };
            checked.map_err(|e| format!("setting `{used}`: {e}"))?;
        }
        Ok(Self { transport, kind, destination, qos, addressing: Addressing::default() })
    }

    fn upstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        match item.kind() {
            Kind::Data => self.publish(item, out),
            Kind::Subscribe | Kind::Unsubscribe => self.subscription(item, out),
            kind => Err(ItemError::unsupported(format!(
                "the Solace endpoint maps data, subscribe and unsubscribe items, not {kind:?} items"
            ))),
        }
    }

    fn downstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        if item.kind() != Kind::Data {
            return Err(ItemError::unsupported(format!(
                "the Solace endpoint maps data records only, not {:?} items",
                item.kind()
            )));
        }
        let binary = item.is_binary() || std::str::from_utf8(item.payload()).is_err();
        let mut w = out.copy_tracking(item);
        w.binary(binary).payload(item.payload());
        match self.transport {
            Transport::Amqp => {
                if let Some(address) = item.destination() {
                    let (kind, name) = self.addressing.split(address);
                    w.destination(name);
                    if let Some(kind) = kind {
                        w.header("solace-destination-kind", kind.as_str().as_bytes());
                    }
                }
                amqp::read(item, &[(":timestamp", "solace-timestamp")], &mut w);
                Ok(())
            }
            Transport::Mqtt => {
                if let Some(topic) = item.destination() {
                    w.destination(topic);
                }
                mqtt::read(item, "", &[], &mut w)
            }
        }
    }
}

impl Solace {
    /// Maps a data event to a record.
    fn publish(&self, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        let given = item.destination().or(self.destination.as_deref()).ok_or_else(|| {
            ItemError::malformed(format!(
                "no destination: the event has no destination and setting `{}` is unset",
                self.kind.as_str()
            ))
        })?;
        let (prefixed, name) = self.addressing.split(given);
        let kind = prefixed.unwrap_or(self.kind);
        match kind {
            AddressKind::Topic => topic::check_topic(name),
            AddressKind::Queue => topic::check_queue(name),
        }
        .map_err(ItemError::malformed)?;

        let mut w = out.copy_tracking(item);
        w.payload(item.payload());
        match self.transport {
            Transport::Amqp => {
                w.destination(&self.addressing.address(kind, name));
                amqp::write(item, &[], &mut w)
            }
            Transport::Mqtt => {
                if kind == AddressKind::Queue {
                    return Err(ItemError::malformed(format!(
                        "destination `{given}`: the MQTT transport publishes to topics only"
                    )));
                }
                mqtt::check_topic_name(name).map_err(ItemError::malformed)?;
                w.destination(name).header(":qos", self.qos.as_bytes());
                mqtt::write(item, "", &mut w)
            }
        }
    }

    /// Maps a subscribe or unsubscribe item to the subscription the host's client makes.
    fn subscription(&self, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        let given = item
            .destination()
            .ok_or_else(|| ItemError::malformed("a subscription needs a destination: the topic pattern"))?;
        let subscription = match self.addressing.split(given) {
            (Some(AddressKind::Queue), _) => {
                return Err(ItemError::malformed(format!(
                    "destination `{given}`: subscriptions are to topics, not queues"
                )));
            }
            (_, subscription) => subscription,
        };
        let destination = match self.transport {
            Transport::Amqp => topic::check_subscription(subscription)
                .map(|()| self.addressing.address(AddressKind::Topic, subscription)),
            Transport::Mqtt => solace_subscription_to_mqtt(subscription),
        }
        .map_err(|error| {
            let message = format!("subscription `{}`: {error}", subscription.escape_debug());
            if error.is_invalid() { ItemError::malformed(message) } else { ItemError::unsupported(message) }
        })?;

        out.copy_tracking(item).destination(&destination);
        Ok(())
    }
}

mediation_adapter_sdk::export_adapter!(Solace);

#[cfg(test)]
mod tests {
    use super::*;
    use mediation_adapter_sdk::Batch;
    use mediation_adapter_sdk::guest::testing::{self, errors, map, round_trip};
    use mediation_adapter_sdk::guest::{Direction, ErrorKind};

    fn solace(settings: &[(&str, &str)]) -> Solace {
        configure(settings).expect("valid settings")
    }

    fn configure(settings: &[(&str, &str)]) -> Result<Solace, String> {
        testing::configure(settings)
    }

    /// An event with every field and the well-known headers.
    fn full_event(input: &mut BatchBuilder) {
        input
            .item(Kind::Data)
            .id("e1")
            .destination("orders/eu/created")
            .key(b"not carried")
            .content_type("application/json")
            .header("correlation-id", b"c1")
            .header("reply-to", b"replies/c7")
            .header("region", b"eu")
            .payload(br#"{"n":1}"#)
            .sequence(6)
            .client_id("c-6")
            .ack_requested();
    }

    #[test]
    fn maps_an_event_to_an_amqp_topic_record() {
        let mut input = BatchBuilder::default();
        full_event(&mut input);
        let (data, index, outcome) = map(&solace(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1]);
        assert!(outcome.errors.is_empty());
        let records = Batch::parse(&data, &index).expect("output parses");
        let record = records.get(0);
        assert_eq!(record.destination(), Some("topic://orders/eu/created"));
        assert_eq!(record.id(), Some("e1"));
        assert_eq!(record.content_type(), Some("application/json"));
        assert_eq!(record.key(), None);
        assert_eq!(
            record.headers().collect::<Vec<_>>(),
            vec![(":correlation-id", &b"c1"[..]), (":reply-to", &b"replies/c7"[..]), ("region", &b"eu"[..]),]
        );
        assert_eq!(record.payload(), br#"{"n":1}"#);
        assert_eq!(record.sequence(), 6);
        assert_eq!(record.client_id(), Some("c-6"));
        assert!(record.ack_requested());
    }

    #[test]
    fn maps_an_event_to_an_mqtt_record() {
        let mut input = BatchBuilder::default();
        full_event(&mut input);
        let (data, index, outcome) = map(&solace(&[("transport", "mqtt")]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1]);
        let records = Batch::parse(&data, &index).expect("output parses");
        let record = records.get(0);
        assert_eq!(record.destination(), Some("orders/eu/created"));
        assert_eq!(record.id(), None);
        assert_eq!(record.content_type(), Some("application/json"));
        assert_eq!(
            record.headers().collect::<Vec<_>>(),
            vec![
                (":qos", &b"1"[..]),
                ("message-id", &b"e1"[..]),
                (":correlation-data", &b"c1"[..]),
                (":response-topic", &b"replies/c7"[..]),
                ("region", &b"eu"[..]),
            ]
        );
        let direct = solace(&[("transport", "mqtt"), ("delivery_mode", "direct")]);
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("topic://a/b");
        let (data, index, _) = map(&direct, Direction::Upstream, input);
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.get(0).destination(), Some("a/b"), "the topic:// prefix is removed");
        assert_eq!(records.get(0).headers().collect::<Vec<_>>(), vec![(":qos", &b"0"[..])]);
    }

    #[test]
    fn queues_and_default_destinations() {
        let queues = solace(&[("destination_kind", "queue"), ("queue", "orders-in")]);
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"a");
        input.item(Kind::Data).destination("audit").payload(b"b");
        input.item(Kind::Data).destination("topic://prices/acme").payload(b"c");
        let (data, index, outcome) = map(&queues, Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 1, 1]);
        let records = Batch::parse(&data, &index).expect("output parses");
        let destinations: Vec<_> = records.iter().map(|r| r.destination()).collect();
        assert_eq!(destinations, vec![Some("queue://orders-in"), Some("queue://audit"), Some("topic://prices/acme")]);

        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"a");
        let (data, index, _) = map(&solace(&[("topic", "status/all")]), Direction::Upstream, input);
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.get(0).destination(), Some("topic://status/all"));

        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"a");
        let (_, _, outcome) = map(&solace(&[]), Direction::Upstream, input);
        assert_eq!(
            errors(&outcome),
            vec![(
                0,
                ErrorKind::Malformed,
                "no destination: the event has no destination and setting `topic` is unset"
            )]
        );
    }

    #[test]
    fn publish_destinations_are_checked() {
        let amqp = solace(&[]);
        let mqtt = solace(&[("transport", "mqtt")]);
        let cases: [(&Solace, &str, &str); 6] = [
            (
                &amqp,
                "orders/*",
                "topic `orders/*` has a wildcard level (`*`, `abc*` or `>`), which only subscriptions may use",
            ),
            (
                &amqp,
                "orders/>",
                "topic `orders/>` has a wildcard level (`*`, `abc*` or `>`), which only subscriptions may use",
            ),
            (&amqp, "queue://a;b", "queue `a;b` contains one of '*<>&; or a control character"),
            (&amqp, "topic://", "topic `` is empty"),
            (&mqtt, "orders/+", "topic `orders/+` contains a wildcard (`+` or `#`), which only subscriptions may use"),
            (&mqtt, "queue://q", "destination `queue://q`: the MQTT transport publishes to topics only"),
        ];
        for (adapter, destination, message) in cases {
            let mut input = BatchBuilder::default();
            input.item(Kind::Data).destination(destination);
            let (_, _, outcome) = map(adapter, Direction::Upstream, input);
            assert_eq!(errors(&outcome), vec![(0, ErrorKind::Malformed, message)], "{destination}");
        }
    }

    #[test]
    fn one_bad_event_fails_alone() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("a/1").id("1");
        input.item(Kind::Data).destination("a/*").id("2");
        input.item(Kind::Data).destination("a/3").id("3");
        let (data, index, outcome) = map(&solace(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 0, 1]);
        assert_eq!(
            errors(&outcome),
            vec![(
                1,
                ErrorKind::Malformed,
                "topic `a/*` has a wildcard level (`*`, `abc*` or `>`), which only subscriptions may use"
            )]
        );
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.len(), 2);
        assert_eq!((records.get(0).destination(), records.get(0).id()), (Some("topic://a/1"), Some("1")));
        assert_eq!((records.get(1).destination(), records.get(1).id()), (Some("topic://a/3"), Some("3")));
    }

    #[test]
    fn subscriptions_are_translated_for_mqtt_and_prefixed_for_amqp() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Subscribe).destination("prices/*/acme/>").client_id("c1").sequence(2);
        input.item(Kind::Unsubscribe).destination("topic://prices/>").client_id("c1");
        input.item(Kind::Subscribe).destination("prices/ac*");
        input.item(Kind::Subscribe).destination("prices/a*c");
        let (data, index, outcome) = map(&solace(&[("transport", "mqtt")]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 1, 0, 0]);
        assert_eq!(
            errors(&outcome),
            vec![
                (
                    2,
                    ErrorKind::Unsupported,
                    "subscription `prices/ac*`: level `ac*` is a prefix wildcard, which MQTT cannot express: its \
                     wildcards match whole levels"
                ),
                (3, ErrorKind::Malformed, "subscription `prices/a*c`: level `a*c`: `*` may only end a level"),
            ]
        );
        let items = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(items.get(0).kind(), Kind::Subscribe);
        assert_eq!(items.get(0).destination(), Some("prices/+/acme/+/#"));
        assert_eq!(items.get(0).client_id(), Some("c1"));
        assert_eq!(items.get(0).sequence(), 2);
        assert_eq!(items.get(1).kind(), Kind::Unsubscribe);
        assert_eq!(items.get(1).destination(), Some("prices/+/#"));

        let mut input = BatchBuilder::default();
        input.item(Kind::Subscribe).destination("prices/ac*");
        input.item(Kind::Subscribe).destination("queue://q");
        input.item(Kind::Ack).id("e1");
        let (data, index, outcome) = map(&solace(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 0, 0]);
        assert_eq!(
            errors(&outcome),
            vec![
                (1, ErrorKind::Malformed, "destination `queue://q`: subscriptions are to topics, not queues"),
                (
                    2,
                    ErrorKind::Unsupported,
                    "the Solace endpoint maps data, subscribe and unsubscribe items, not Ack items"
                ),
            ]
        );
        let items = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(items.get(0).destination(), Some("topic://prices/ac*"));
    }

    #[test]
    fn maps_an_amqp_record_to_an_event() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .destination("topic://orders/eu/created")
            .id("m1")
            .content_type("text/plain")
            .header(":correlation-id", b"c1")
            .header(":reply-to", b"replies/c7")
            .header(":timestamp", b"1700000000000")
            .header(":priority", b"4")
            .header(":annotation:x-opt-jms-dest", b"1")
            .header("region", b"eu")
            .payload(b"hello")
            .client_id("c-21")
            .sequence(21);
        let (data, index, outcome) = map(&solace(&[]), Direction::Downstream, input);
        assert_eq!(outcome.produced, vec![1]);
        let events = Batch::parse(&data, &index).expect("output parses");
        let event = events.get(0);
        assert_eq!(event.destination(), Some("orders/eu/created"));
        assert_eq!(event.id(), Some("m1"));
        assert_eq!(event.content_type(), Some("text/plain"));
        assert_eq!(
            event.headers().collect::<Vec<_>>(),
            vec![
                ("solace-destination-kind", &b"topic"[..]),
                ("correlation-id", &b"c1"[..]),
                ("reply-to", &b"replies/c7"[..]),
                ("solace-timestamp", &b"1700000000000"[..]),
                ("region", &b"eu"[..]),
            ]
        );
        assert_eq!(event.sequence(), 21);
        assert_eq!(event.client_id(), Some("c-21"));
        assert!(!event.is_binary());
    }

    #[test]
    fn maps_an_mqtt_record_to_an_event() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .destination("orders/eu/created")
            .content_type("application/octet-stream")
            .header(":qos", b"1")
            .header(":retain", b"false")
            .header(":response-topic", b"replies/c7")
            .header(":correlation-data", b"c1")
            .header("message-id", b"e1")
            .header("region", b"eu")
            .payload(&[0xff, 0x00]);
        let (data, index, outcome) = map(&solace(&[("transport", "mqtt")]), Direction::Downstream, input);
        assert_eq!(outcome.produced, vec![1]);
        let events = Batch::parse(&data, &index).expect("output parses");
        let event = events.get(0);
        assert_eq!(event.destination(), Some("orders/eu/created"));
        assert_eq!(event.id(), Some("e1"));
        assert_eq!(event.content_type(), Some("application/octet-stream"));
        assert_eq!(
            event.headers().collect::<Vec<_>>(),
            vec![("reply-to", &b"replies/c7"[..]), ("correlation-id", &b"c1"[..]), ("region", &b"eu"[..]),]
        );
        assert!(event.is_binary());
    }

    #[test]
    fn an_event_survives_the_round_trip_on_both_transports() {
        for transport in ["amqp", "mqtt"] {
            let adapter = solace(&[("transport", transport)]);
            let mut input = BatchBuilder::default();
            full_event(&mut input);
            let (data, index, _) = round_trip(&adapter, input);
            let events = Batch::parse(&data, &index).expect("output parses");
            let event = events.get(0);
            assert_eq!(event.id(), Some("e1"), "{transport}");
            assert_eq!(event.destination(), Some("orders/eu/created"), "{transport}");
            assert_eq!(event.content_type(), Some("application/json"), "{transport}");
            assert_eq!(event.header("correlation-id"), Some(&b"c1"[..]), "{transport}");
            assert_eq!(event.header("reply-to"), Some(&b"replies/c7"[..]), "{transport}");
            assert_eq!(event.header("region"), Some(&b"eu"[..]), "{transport}");
            assert_eq!(event.payload(), br#"{"n":1}"#, "{transport}");
        }
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let refused = |settings: &[(&str, &str)]| configure(settings).expect_err("refused");
        assert_eq!(refused(&[("transport", "smf")]), "setting `transport`: `smf` is not one of amqp, mqtt");
        assert_eq!(
            refused(&[("transport", "mqtt"), ("destination_kind", "queue")]),
            "setting `destination_kind`: `queue` needs `transport = amqp` (MQTT publishes to topics only)"
        );
        assert_eq!(
            refused(&[("delivery_mode", "direct")]),
            "setting `delivery_mode`: `direct` needs `transport = mqtt` (Solace carries AMQP 1.0 as guaranteed \
             messages only)"
        );
        assert_eq!(
            refused(&[("queue", "q")]),
            "setting `queue`: not used with `destination_kind = topic`; set `topic` instead"
        );
        assert_eq!(
            refused(&[("topic", "a/>")]),
            "setting `topic`: topic `a/>` has a wildcard level (`*`, `abc*` or `>`), which only subscriptions may use"
        );
        assert_eq!(
            refused(&[("transport", "mqtt"), ("topic", "a/#")]),
            "setting `topic`: topic `a/#` contains a wildcard (`+` or `#`), which only subscriptions may use"
        );
        assert_eq!(
            refused(&[("destination_kind", "queue"), ("queue", "a<b")]),
            "setting `queue`: queue `a<b` contains one of '*<>&; or a control character"
        );
        assert_eq!(
            refused(&[("vpn", "default")]),
            "unknown setting `vpn` (known: transport, destination_kind, topic, queue, delivery_mode)"
        );
    }
}
