//! Records to MQTT 5 PUBLISH packets and back, by the record convention of
//! `docs/mappings/endpoints.md`: `destination` is the topic, the content type the
//! Content Type property, `:qos`, `:retain`, `:response-topic`, `:correlation-data` and
//! `:message-expiry-interval` are PUBLISH fields and properties, and every other header
//! is a user property. The record's `id` and `key` are not carried: the adapter put the
//! id in a user property, and MQTT has no key.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};

use crate::event::{Event, Header, Text};
use crate::routing::ComponentId;

/// A PUBLISH ready for the client.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// The topic name.
    pub topic: String,
    /// The QoS it is published with.
    pub qos: QoS,
    /// The retain flag.
    pub retain: bool,
    /// Content type, response topic, correlation data, expiry and user properties.
    pub properties: PublishProperties,
}

impl Outgoing {
    /// An upper bound of the PUBLISH packet's size with `payload`, to compare with the
    /// broker's maximum packet size: the client would drop the connection over it.
    pub(super) fn packet_bytes(&self, payload: usize) -> usize {
        let p = &self.properties;
        let strings = [p.content_type.as_deref(), p.response_topic.as_deref()].into_iter().flatten().map(str::len);
        let users: usize = p.user_properties.iter().map(|(k, v)| k.len() + v.len() + 5).sum();
        let correlation = p.correlation_data.as_ref().map_or(0, Bytes::len);
        // Fixed header (5), topic length (2), packet id (2), property lengths and ids (32).
        41 + self.topic.len() + payload + users + correlation + strings.map(|len| len + 3).sum::<usize>()
    }
}

/// The PUBLISH for `record`, an adapter's output. `:qos` and `:retain` default to
/// `qos` and `retain`.
///
/// # Errors
/// A field MQTT cannot carry (no topic, a wildcard in it, a property value that is not
/// a number where one is needed, a user property that is not UTF-8), named. The
/// adapter should have refused such a record.
pub(super) fn to_publish(record: &Event, qos: QoS, retain: bool) -> Result<Outgoing, String> {
    let topic = record.destination.as_ref().map(Text::as_str).ok_or("the record has no topic")?;
    check_topic(topic)?;
    let mut out = Outgoing { topic: topic.to_owned(), qos, retain, properties: PublishProperties::default() };
    out.properties.content_type = record.content_type.as_ref().map(|c| c.as_str().to_owned());
    for header in &record.headers {
        let name = header.name.as_str();
        let text = || {
            std::str::from_utf8(&header.value)
                .map_err(|_| format!("`{name}`: the value is not UTF-8; MQTT strings are UTF-8"))
        };
        match name {
            ":qos" => {
                out.qos = match text()? {
                    "0" => QoS::AtMostOnce,
                    "1" => QoS::AtLeastOnce,
                    "2" => QoS::ExactlyOnce,
                    other => return Err(format!("property `:qos`: `{other}` is not 0, 1 or 2")),
                }
            }
            ":retain" => {
                out.retain = match text()? {
                    "true" => true,
                    "false" => false,
                    other => return Err(format!("property `:retain`: `{other}` is not true or false")),
                }
            }
            ":response-topic" => {
                let topic = text()?;
                check_topic(topic).map_err(|e| format!("property `:response-topic`: {e}"))?;
                out.properties.response_topic = Some(topic.to_owned());
            }
            ":correlation-data" => out.properties.correlation_data = Some(header.value.clone()),
            ":message-expiry-interval" => {
                let seconds = text()?;
                let seconds = seconds.parse::<u32>().map_err(|_| {
                    format!("property `:message-expiry-interval`: `{seconds}` is not a number of seconds")
                })?;
                out.properties.message_expiry_interval = Some(seconds);
            }
            // Properties of other brokers (`:priority`, `:partition`) mean nothing here.
            _ if name.starts_with(':') => {}
            _ => out.properties.user_properties.push((name.to_owned(), text()?.to_owned())),
        }
    }
    Ok(out)
}

/// Checks a topic name the way brokers do: not empty, no wildcard, no U+0000.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err(String::from("the topic is empty"));
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(format!("topic `{}` contains `+`, `#` or U+0000", topic.escape_debug()));
    }
    Ok(())
}

/// The record for a received PUBLISH, the input of the adapter's downstream call:
/// the topic as destination, `:qos`, `:retain` and the properties as `:` headers, user
/// properties as headers.
pub(super) fn from_publish(publish: &Publish, source: ComponentId, ordering_key: u64) -> Event {
    let mut record = Event::new(source, publish.payload.clone());
    record.ordering_key = ordering_key;
    record.destination = Some(Text::from(String::from_utf8_lossy(&publish.topic).into_owned()));
    let level = match publish.qos {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    };
    record.headers.push(Header::new(Text::from_static(":qos"), Bytes::from_static(level.as_bytes())));
    let retain: &'static [u8] = if publish.retain { b"true" } else { b"false" };
    record.headers.push(Header::new(Text::from_static(":retain"), Bytes::from_static(retain)));
    if let Some(p) = &publish.properties {
        record.content_type = p.content_type.as_ref().map(|c| Text::from(c.as_str()));
        if let Some(topic) = &p.response_topic {
            record.headers.push(Header::new(Text::from_static(":response-topic"), topic.clone()));
        }
        if let Some(data) = &p.correlation_data {
            record.headers.push(Header::new(Text::from_static(":correlation-data"), data.clone()));
        }
        if let Some(seconds) = p.message_expiry_interval {
            record.headers.push(Header::new(Text::from_static(":message-expiry-interval"), seconds.to_string()));
        }
        for (name, value) in &p.user_properties {
            record.headers.push(Header::new(name.as_str(), value.clone()));
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Event {
        let mut e = Event::new(ComponentId(0), Bytes::from_static(b"hello"));
        e.destination = Some(Text::from("plant/t1"));
        e.content_type = Some(Text::from("text/plain"));
        e
    }

    #[test]
    fn properties_and_user_properties_follow_the_record_convention() {
        let mut r = record();
        for (name, value) in [
            (":qos", "2"),
            (":retain", "true"),
            (":response-topic", "replies/c1"),
            (":message-expiry-interval", "60"),
            (":priority", "9"),
            ("message-id", "e1"),
            ("unit", "celsius"),
        ] {
            r.headers.push(Header::new(name, value));
        }
        r.headers.push(Header::new(":correlation-data", vec![0u8, 0xff]));
        let out = to_publish(&r, QoS::AtMostOnce, false).expect("maps");
        assert_eq!((out.topic.as_str(), out.qos, out.retain), ("plant/t1", QoS::ExactlyOnce, true));
        let p = &out.properties;
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.response_topic.as_deref(), Some("replies/c1"));
        assert_eq!(p.correlation_data.as_deref(), Some(&[0u8, 0xff][..]));
        assert_eq!(p.message_expiry_interval, Some(60));
        let users: Vec<(&str, &str)> = p.user_properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(users, [("message-id", "e1"), ("unit", "celsius")], "`:priority` is another broker's");
        assert!(out.packet_bytes(5) > 5 + "plant/t1".len() + "message-id".len() + "celsius".len());
    }

    #[test]
    fn defaults_apply_and_bad_fields_are_named() {
        let out = to_publish(&record(), QoS::AtLeastOnce, false).expect("maps");
        assert_eq!((out.qos, out.retain), (QoS::AtLeastOnce, false));
        assert!(out.properties.user_properties.is_empty());

        let mut bad = record();
        bad.headers.push(Header::new(":qos", "3"));
        assert_eq!(
            to_publish(&bad, QoS::AtLeastOnce, false).expect_err("refused"),
            "property `:qos`: `3` is not 0, 1 or 2"
        );
        let mut wild = record();
        wild.destination = Some(Text::from("a/+"));
        assert_eq!(
            to_publish(&wild, QoS::AtLeastOnce, false).expect_err("refused"),
            "topic `a/+` contains `+`, `#` or U+0000"
        );
        let mut none = record();
        none.destination = None;
        assert_eq!(to_publish(&none, QoS::AtLeastOnce, false).expect_err("refused"), "the record has no topic");
        let mut binary = record();
        binary.headers.push(Header::new("blob", vec![0xffu8]));
        assert_eq!(
            to_publish(&binary, QoS::AtLeastOnce, false).expect_err("refused"),
            "`blob`: the value is not UTF-8; MQTT strings are UTF-8"
        );
    }

    #[test]
    fn a_publish_becomes_a_record_with_properties_as_headers() {
        let properties = PublishProperties {
            content_type: Some(String::from("application/json")),
            response_topic: Some(String::from("replies/c1")),
            correlation_data: Some(Bytes::from_static(&[7, 0xff])),
            user_properties: vec![
                (String::from("message-id"), String::from("e1")),
                (String::from("u"), String::from("v")),
            ],
            ..PublishProperties::default()
        };
        let mut publish = Publish::new("plant/t1", QoS::AtLeastOnce, Bytes::from_static(b"{}"), Some(properties));
        publish.retain = true;
        let r = from_publish(&publish, ComponentId(3), 42);
        assert_eq!((r.source, r.ordering_key), (ComponentId(3), 42));
        assert_eq!(r.destination.as_ref().map(Text::as_str), Some("plant/t1"));
        assert_eq!(r.content_type.as_ref().map(Text::as_str), Some("application/json"));
        let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|h| (h.name.as_str(), &h.value[..])).collect();
        assert_eq!(
            headers,
            [
                (":qos", &b"1"[..]),
                (":retain", b"true"),
                (":response-topic", b"replies/c1"),
                (":correlation-data", &[7, 0xff]),
                ("message-id", b"e1"),
                ("u", b"v"),
            ]
        );
        assert_eq!(&r.payload[..], b"{}");
    }
}
