//! The packet log writer (`host/src/packet_log.rs`) with hostile ids, names, header
//! names and values, and payloads.
//!
//! The input is a switch byte (bit 0: include headers, 1: include payload, 2: a route,
//! 3: a client id, 4: a destination, 5: an error, 6: a target) and then fields
//! separated by 0xFF (a byte UTF-8 never holds): event id, source, target, route label,
//! client id, destination, error message, payload, then header name and value pairs.
//! Text fields are read as lossy UTF-8, header values and the payload as raw bytes.
//!
//! Asserts that the record is exactly one line, that the line is one JSON object
//! whose header names are unique, and that every field reads back as the event held
//! it: text exactly, the payload and header values as lossy UTF-8, sensitive headers
//! redacted, and the values of a repeated header name joined by `, ` in order.

#![no_main]

use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mediation_host::config::PacketLogConfig;
use mediation_host::event::{DeliveryError, Event, EventId, Header, Text};
use mediation_host::metrics::{Outcome, RouteStats};
use mediation_host::packet_log::{Packet, PacketLog, Sink};
use mediation_host::routing::{ComponentId, Direction, Route};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&switches, rest)) = data.split_first() else {
        return;
    };
    let on = |bit: u8| switches & (1 << bit) != 0;
    let mut fields = rest.split(|&byte| byte == 0xff);
    let mut next = || fields.next().unwrap_or_default();
    let mut text = || String::from_utf8_lossy(next()).into_owned();
    let (id, source, target, label) = (text(), text(), text(), text());
    let (client_id, destination, error) = (text(), text(), text());
    let payload = next().to_vec();
    let mut headers = Vec::new();
    while let Some(name) = fields.next() {
        let value = fields.next().unwrap_or_default();
        headers.push(Header::new(String::from_utf8_lossy(name).into_owned(), Bytes::copy_from_slice(value)));
    }

    let mut event = Event::new(ComponentId(0), Bytes::from(payload));
    event.id = EventId::Given(Text::from(id.as_str()));
    event.client_id = on(3).then(|| Text::from(client_id.as_str()));
    event.destination = on(4).then(|| Text::from(destination.as_str()));
    event.headers = headers;
    let route = Route {
        index: 0,
        source: ComponentId(0),
        target: ComponentId(1),
        direction: Direction::Upstream,
        label: Arc::from(label.as_str()),
        stats: Arc::new(RouteStats::default()),
    };
    let error = on(5).then(|| DeliveryError::Target { target: target.clone(), message: error });
    let outcome = if error.is_some() { Outcome::TargetError } else { Outcome::Delivered };
    let packet = Packet {
        event: &event,
        source: &source,
        route: on(2).then_some(&route),
        target: on(6).then_some(target.as_str()),
        outcome,
        error: error.as_ref(),
    };

    let config = PacketLogConfig { include_headers: on(0), include_payload: on(1), ..PacketLogConfig::default() };
    let memory = Arc::new(Mutex::new(Vec::new()));
    let log = PacketLog::new(&config, Sink::Memory(Arc::clone(&memory)));
    let mut buf = Vec::new();
    log.record(&mut buf, &packet);
    log.flush(&mut buf);
    let written = memory.lock().expect("no other thread holds it").clone();

    assert_eq!(written.last(), Some(&b'\n'), "a line ends the record");
    assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 1, "exactly one line");
    let line: Value = serde_json::from_slice(&written).expect("the line is JSON");
    let line = line.as_object().expect("the line is one JSON object");
    let field = |name: &str| line.get(name).and_then(Value::as_str);
    assert_eq!(field("event_id"), Some(id.as_str()));
    assert_eq!(field("source"), Some(source.as_str()));
    assert_eq!(field("target"), packet.target);
    assert_eq!(field("route"), packet.route.map(|r| &*r.label));
    assert_eq!(field("client_id"), event.client_id.as_ref().map(Text::as_str));
    assert_eq!(field("destination"), event.destination.as_ref().map(Text::as_str));
    assert_eq!(field("error"), error.as_ref().map(ToString::to_string).as_deref());
    assert_eq!(field("outcome"), Some(outcome.as_str()));
    assert_eq!(line.get("bytes").and_then(Value::as_u64), Some(event.payload.len() as u64));
    let payload = config.include_payload.then(|| String::from_utf8_lossy(&event.payload).into_owned());
    assert_eq!(field("payload"), payload.as_deref());

    // The headers object again, in written order and with repeated names kept, which a
    // `Value` would merge.
    #[derive(serde::Deserialize)]
    struct Headers {
        headers: Option<Ordered>,
    }
    let Headers { headers } = serde_json::from_slice(&written).expect("the line is JSON");
    match headers {
        None => assert!(!config.include_headers),
        Some(Ordered(written)) => assert_eq!(written, expected_headers(&event, &config)),
    }
});

/// What the `headers` object should hold: each name once, in the order names first
/// appear, with the values of that name joined by `, `, or `[redacted]`.
fn expected_headers(event: &Event, config: &PacketLogConfig) -> Vec<(String, String)> {
    let mut expected: Vec<(&str, Vec<String>)> = Vec::new();
    for header in &event.headers {
        let value = String::from_utf8_lossy(&header.value).into_owned();
        match expected.iter_mut().find(|(name, _)| *name == header.name.as_str()) {
            Some((_, values)) => values.push(value),
            None => expected.push((header.name.as_str(), vec![value])),
        }
    }
    let redacted = |name: &str| config.redact_headers.iter().any(|r| r.eq_ignore_ascii_case(name));
    expected
        .into_iter()
        .map(|(name, values)| {
            let value = if redacted(name) { String::from("[redacted]") } else { values.join(", ") };
            (name.to_owned(), value)
        })
        .collect()
}

/// A JSON object of strings as its entries in order, duplicates kept.
struct Ordered(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}
