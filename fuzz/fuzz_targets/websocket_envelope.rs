//! The WebSocket adapter's envelope decoder (`guests/websocket`), run natively the way
//! its unit tests run it. The input is one text frame.
//!
//! Asserts that a frame gives one event or one `malformed` error, never both or more;
//! that a frame which is not UTF-8 is refused; that a decoded message written back as
//! JSON decodes to the same event (a round trip through the documented format); and
//! that encoding a decoded event back to a client (`message` envelope) gives one JSON
//! object carrying the same topic, id, content type and data. The `raw` protocol must
//! take exactly the UTF-8 frames, unchanged.

#![no_main]

use adapter_websocket::WebSocket;
use libfuzzer_sys::fuzz_target;
use mediation_adapter_sdk::guest::testing::{self, Output};
use mediation_adapter_sdk::guest::{Direction, ErrorKind};
use mediation_adapter_sdk::{Batch, BatchBuilder, Item, Kind};
use serde::de::IgnoredAny;
use serde_json::Value;

/// The frame's own sequence, client and destination, which the event inherits.
const SEQUENCE: u64 = 5;
const CLIENT: &str = "c1";
const DESTINATION: &str = "chat";

fuzz_target!(|frame: &[u8]| {
    let envelope: WebSocket = testing::configure(&[("protocol", "envelope")]).expect("a valid setting");
    let raw: WebSocket = testing::configure(&[]).expect("the defaults");

    let decoded = decode(&envelope, frame);
    let output = decoded.batch();
    match decoded.produced[..] {
        [0] => {
            assert!(matches!(decoded.errors[..], [(0, ErrorKind::Malformed, _)]), "{:?}", decoded.errors);
            assert_eq!(output.len(), 0);
        }
        [1] => {
            assert!(decoded.errors.is_empty());
            assert!(std::str::from_utf8(frame).is_ok(), "a frame that is not UTF-8 was accepted");
            let event = output.get(0);
            assert_round_trip(&envelope, &event);
            if event.kind() == Kind::Data {
                assert_client_frame(&envelope, &event);
            }
        }
        _ => panic!("one frame gave {:?} events", decoded.produced),
    }

    let passed = decode(&raw, frame);
    if std::str::from_utf8(frame).is_ok() {
        assert_eq!(passed.produced, vec![1]);
        assert_eq!(passed.batch().get(0).payload(), frame);
    } else {
        assert_eq!(passed.produced, vec![0]);
    }
});

/// Decodes `payload` as a text frame from client `c1` on a connection bound to `chat`.
fn decode(adapter: &WebSocket, payload: &[u8]) -> Output {
    let mut input = BatchBuilder::default();
    input.item(Kind::Data).sequence(SEQUENCE).client_id(CLIENT).destination(DESTINATION).payload(payload);
    Output::map(adapter, Direction::Upstream, input)
}

/// Writes `event` back as the envelope message that should decode to it, and checks
/// that it does.
fn assert_round_trip(adapter: &WebSocket, event: &Item<'_>) {
    assert_eq!(event.client_id(), Some(CLIENT));
    let topic = event.destination().expect("every event has a destination");
    let message = match event.kind() {
        Kind::Data => {
            assert!(!event.is_binary(), "envelope payloads are never binary");
            assert_eq!(event.sequence(), SEQUENCE);
            publish_message(event)
        }
        Kind::Subscribe | Kind::Unsubscribe => {
            let kind = if event.kind() == Kind::Subscribe { "subscribe" } else { "unsubscribe" };
            format!(r#"{{"type":"{kind}","topic":{}}}"#, string(topic))
        }
        Kind::Ack | Kind::Resume => {
            assert_eq!(topic, DESTINATION);
            let kind = if event.kind() == Kind::Ack { "ack" } else { "resume" };
            format!(r#"{{"type":"{kind}","seq":{}}}"#, event.sequence())
        }
    };
    let again = decode(adapter, message.as_bytes());
    assert_eq!(again.produced, vec![1], "{message} was refused: {:?}", again.errors);
    let batch = again.batch();
    let second = batch.get(0);
    assert_eq!(second.kind(), event.kind(), "{message}");
    assert_eq!(second.flags(), event.flags(), "{message}");
    assert_eq!(second.sequence(), event.sequence(), "{message}");
    assert_eq!(second.id(), event.id(), "{message}");
    assert_eq!(second.destination(), event.destination(), "{message}");
    assert_eq!(second.key(), event.key(), "{message}");
    assert_eq!(second.content_type(), event.content_type(), "{message}");
    assert_eq!(second.payload(), event.payload(), "{message}");
    if !repeats_a_name(event) {
        assert!(second.headers().eq(event.headers()), "{message}");
    }
}

/// The `publish` message for a decoded data event, every field explicit.
fn publish_message(event: &Item<'_>) -> String {
    let text = |bytes: &[u8]| std::str::from_utf8(bytes).expect("decoded from JSON strings, so UTF-8").to_owned();
    let payload = text(event.payload());
    // A payload that is JSON text as it stands is written as it is; any other payload
    // is the text of a JSON string. Either decodes to the same bytes.
    let embeds =
        payload.trim() == payload && !payload.starts_with('"') && serde_json::from_str::<IgnoredAny>(&payload).is_ok();
    let data = if embeds { payload } else { string(&payload) };
    let mut message = format!(r#"{{"type":"publish","data":{data}"#);
    for (field, value) in [("topic", event.destination()), ("id", event.id()), ("content_type", event.content_type())] {
        if let Some(value) = value {
            message.push_str(&format!(",{}:{}", string(field), string(value)));
        }
    }
    if let Some(key) = event.key() {
        message.push_str(&format!(r#","key":{}"#, string(&text(key))));
    }
    message.push_str(&format!(r#","ack":{}"#, event.ack_requested()));
    let headers: Vec<String> =
        event.headers().map(|(name, value)| format!("{}:{}", string(name), string(&text(value)))).collect();
    message.push_str(&format!(r#","headers":{{{}}}}}"#, headers.join(",")));
    message
}

/// Two headers that a JSON object cannot both hold: names are lower-cased, so `A` and
/// `a` in one message become two headers named `a`.
fn repeats_a_name(event: &Item<'_>) -> bool {
    let names: Vec<&str> = event.headers().map(|(name, _)| name).collect();
    names.windows(2).any(|pair| pair[0] == pair[1])
}

/// Encodes `event` for a client and checks the envelope `message` object.
fn assert_client_frame(adapter: &WebSocket, event: &Item<'_>) {
    let mut input = BatchBuilder::default();
    input.copy(event);
    let encoded = Output::map(adapter, Direction::Downstream, input);
    assert_eq!(encoded.produced, vec![1], "{:?}", encoded.errors);
    let batch: Batch<'_> = encoded.batch();
    let frame = batch.get(0).payload();
    serde_json::from_slice::<IgnoredAny>(frame).expect("an envelope frame is JSON");
    // Numbers beyond f64 are valid JSON that `Value` cannot hold; the check above covers them.
    let Ok(Value::Object(message)) = serde_json::from_slice::<Value>(frame) else {
        return;
    };
    assert_eq!(message["type"], "message");
    assert_eq!(message["seq"], SEQUENCE);
    assert_eq!(message.get("topic").and_then(Value::as_str), event.destination());
    assert_eq!(message.get("id").and_then(Value::as_str), event.id());
    assert_eq!(message.get("content_type").and_then(Value::as_str), event.content_type());
    let data = &message["data"];
    match serde_json::from_slice::<Value>(event.payload()) {
        Ok(json) if event.content_type().is_some_and(mediation_adapter_sdk::json::is_json) => assert_eq!(*data, json),
        _ => assert_eq!(data.as_str().map(str::as_bytes), Some(event.payload())),
    }
}

/// `text` as a JSON string.
fn string(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serializes")
}
