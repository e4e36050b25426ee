//! The WebSocket entrypoint adapter: decodes client frames into events and encodes
//! events as frames, in one of two protocols chosen by the `protocol` setting.
//!
//! # Settings
//!
//! | Setting | Default | Meaning |
//! |---|---|---|
//! | `protocol` | `raw` | `raw`: every frame is a message and every event a frame. `envelope`: JSON text frames carrying typed messages. |
//!
//! # Upstream (client frame to event), `raw`
//!
//! Each frame becomes one data event with the frame's bytes as payload. The binary
//! flag is kept (set for binary frames); the content type is the one the host set
//! on the frame, or `text/plain; charset=utf-8` for a text frame and
//! `application/octet-stream` for a binary one. Sequence, id, client id,
//! destination, key and headers are kept. A text frame that is not UTF-8 is
//! malformed (WebSocket close code 1007).
//!
//! # Upstream, `envelope`
//!
//! Each frame must be a text frame holding one JSON object whose `type` field says
//! what it is. Unknown fields are refused so that a misspelt field fails loudly.
//!
//! | `type` | Fields | Event |
//! |---|---|---|
//! | `publish` | `data` (any JSON, required), `topic`, `id`, `key`, `content_type` (strings), `ack` (boolean), `headers` (object of strings) | data event |
//! | `subscribe` | `topic` (string pattern, required) | `Subscribe`, destination = `topic` |
//! | `unsubscribe` | `topic` (string pattern, required) | `Unsubscribe`, destination = `topic` |
//! | `ack` | `seq` (integer 0..2^64, required) | `Ack`, sequence = `seq` |
//! | `resume` | `seq` (integer 0..2^64, required) | `Resume`, sequence = `seq` |
//!
//! For `publish`: the destination is `topic` (the frame's destination when absent);
//! the payload is the text of `data` when `data` is a JSON string, with content type
//! `text/plain; charset=utf-8`, and otherwise the JSON text of `data` exactly as the
//! client wrote it, with content type `application/json`; an explicit `content_type`
//! replaces either default. The payload is never flagged binary. `id` and `key`
//! replace the frame's; `ack: true` sets the ack-requested flag; `headers` are added
//! after the frame's, names lower-cased, in name order. When a field appears twice, the last one
//! counts. Every event keeps the frame's client id, and the frame's sequence, id and
//! destination unless the message sets them.
//!
//! Malformed (close code 1007, or an error frame) with a message naming the problem:
//! a binary frame, a text frame that is not UTF-8 or not JSON (with serde_json's line
//! and column), JSON that is not an object, a missing or unknown `type`, a missing
//! required field, a field of the wrong type, an unknown field.
//!
//! # Downstream (event to frame), `raw`
//!
//! The frame is the payload as it is. It is a binary frame when the event is flagged
//! binary, when its content type is not textual (textual: `text/*`,
//! `application/json`, `*+json`, `application/x-ndjson`, `application/xml`; an event
//! without a content type counts as textual), or when the payload is not UTF-8, which
//! a text frame may not carry. The output item keeps the event's content type.
//!
//! # Downstream, `envelope`
//!
//! One text frame holding one compact JSON object, fields in this order and absent
//! ones omitted:
//!
//! ```text
//! {"type":"message","seq":N,"id":"..","topic":"..","content_type":"..",
//!  "headers":{"name":"value"},"headers_base64":{"name":".."},"data":..}
//! ```
//!
//! `seq` is the replay sequence (always present); `topic` the destination. `headers`
//! holds the headers whose value is UTF-8, `headers_base64` the others in standard
//! base64; each is omitted when empty. `data` embeds the payload as JSON (whitespace
//! between tokens removed) when the content type is `application/json` or `*+json`
//! and the payload parses; otherwise as a JSON string when the event is not flagged
//! binary and the payload is UTF-8; otherwise the payload goes to `data_base64` in
//! standard base64. The output item's content type is `application/json`.
//!
//! In both protocols the output item keeps the event's sequence, id, client id and
//! destination so that the host can still filter and target clients. Items that are
//! not data events fail as unsupported. The encoding does not depend on the session,
//! so the host encodes each event once for all clients.

use std::collections::BTreeMap;

use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Role, Settings};
use mediation_adapter_sdk::json::{self, EventStyle};
use mediation_adapter_sdk::{BatchBuilder, Item, Kind};
use serde_json::value::RawValue;

/// The content type of a text frame, and of a published JSON string.
const TEXT: &str = "text/plain; charset=utf-8";
/// The content type of a binary frame.
const BINARY: &str = "application/octet-stream";
/// The content type of published JSON data and of envelope frames.
const JSON: &str = "application/json";
/// The message types of the envelope protocol, as error messages list them.
const TYPES: &str = "publish, subscribe, unsubscribe, ack, resume";

/// How frames map to events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// A frame is a message, an event is a frame.
    Raw,
    /// Frames are typed JSON messages.
    Envelope,
}

/// Decodes WebSocket frames into events and encodes events as frames.
#[derive(Debug)]
pub struct WebSocket {
    /// The protocol spoken on every connection of the entrypoint.
    protocol: Protocol,
}

impl Adapter for WebSocket {
    const ROLE: Role = Role::Entrypoint;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&["protocol"])?;
        let protocol = match settings.choice("protocol", &["raw", "envelope"], "raw")? {
            "envelope" => Protocol::Envelope,
            _ => Protocol::Raw,
        };
        Ok(Self { protocol })
    }

    fn upstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        match self.protocol {
            Protocol::Raw => decode_raw(item, out),
            Protocol::Envelope => decode_envelope(item, out),
        }
    }

    fn downstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        match self.protocol {
            Protocol::Raw => {
                let binary = item.is_binary()
                    || !item.content_type().is_none_or(json::is_textual)
                    || std::str::from_utf8(item.payload()).is_err();
                let mut frame = json::client_frame(out, item)?;
                frame.binary(binary).payload(item.payload());
                if let Some(content_type) = item.content_type() {
                    frame.content_type(content_type);
                }
            }
            Protocol::Envelope => {
                json::event_frame(out, item, EventStyle { type_tag: Some("message"), headers: true })?;
            }
        }
        Ok(())
    }
}

/// The text of a text frame.
fn text_frame<'a>(item: &Item<'a>) -> Result<&'a str, ItemError> {
    json::utf8(item.payload()).map_err(|err| ItemError::malformed(format!("text frame is not UTF-8: {err}")))
}

fn decode_raw(item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
    if !item.is_binary() {
        text_frame(item)?;
    }
    let mut event = out.copy(item);
    if item.content_type().is_none() {
        event.content_type(if item.is_binary() { BINARY } else { TEXT });
    }
    Ok(())
}

fn decode_envelope(item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
    if item.is_binary() {
        return Err(ItemError::malformed(
            "binary frames are not accepted with protocol `envelope`; send a JSON text frame",
        ));
    }
    let message = Message::parse(text_frame(item)?).map_err(ItemError::malformed)?;
    // A control message overrides the frame's destination (subscribe, unsubscribe)
    // or its sequence (ack, resume), and keeps everything else.
    let (kind, topic, sequence) = match message {
        Message::Publish(publish) => {
            publish.write(item, out);
            return Ok(());
        }
        Message::Subscribe(topic) => (Kind::Subscribe, Some(topic), item.sequence()),
        Message::Unsubscribe(topic) => (Kind::Unsubscribe, Some(topic), item.sequence()),
        Message::Ack(seq) => (Kind::Ack, None, seq),
        Message::Resume(seq) => (Kind::Resume, None, seq),
    };
    let mut event = out.item(kind);
    event.sequence(sequence);
    if let Some(id) = item.id() {
        event.id(id);
    }
    if let Some(client_id) = item.client_id() {
        event.client_id(client_id);
    }
    if let Some(destination) = topic.as_deref().or(item.destination()) {
        event.destination(destination);
    }
    Ok(())
}

/// One decoded envelope message.
#[derive(Debug)]
enum Message<'a> {
    Publish(Publish<'a>),
    /// The topic pattern to subscribe to.
    Subscribe(String),
    /// The topic pattern to unsubscribe from.
    Unsubscribe(String),
    /// The sequence acknowledged.
    Ack(u64),
    /// The sequence to resume after.
    Resume(u64),
}

/// A `publish` message. `data` borrows the frame so that its JSON text reaches the
/// broker exactly as the client wrote it.
#[derive(Debug)]
struct Publish<'a> {
    /// The destination; the frame's when absent.
    topic: Option<String>,
    /// The message's data, as the client wrote it.
    data: &'a RawValue,
    /// The event id; the frame's when absent.
    id: Option<String>,
    /// The partitioning key; the frame's when absent.
    key: Option<String>,
    /// Whether the client wants an acknowledgement.
    ack: bool,
    /// Headers added after the frame's, names lower-cased, in name order.
    headers: Vec<(String, String)>,
    /// The content type; derived from `data` when absent.
    content_type: Option<String>,
}

impl<'a> Message<'a> {
    /// Decodes the JSON text of one frame.
    fn parse(text: &'a str) -> Result<Self, String> {
        let value: &RawValue = serde_json::from_str(text).map_err(|err| format!("text frame is not JSON: {err}"))?;
        let fields = Fields::of("message", value)?;
        let kind = fields.string("type")?.ok_or_else(|| format!("field `type` is missing (expected {TYPES})"))?;
        match kind.as_str() {
            "publish" => {
                fields.only("publish", &["type", "topic", "data", "id", "key", "ack", "headers", "content_type"])?;
                let data = fields.get("data").ok_or("field `data` is missing")?;
                let headers = match fields.get("headers") {
                    None => Vec::new(),
                    Some(headers) => Fields::of("field `headers`", headers)?.strings("headers")?,
                };
                Ok(Message::Publish(Publish {
                    topic: fields.string("topic")?,
                    data,
                    id: fields.string("id")?,
                    key: fields.string("key")?,
                    ack: fields.boolean("ack")?.unwrap_or(false),
                    headers,
                    content_type: fields.string("content_type")?,
                }))
            }
            "subscribe" | "unsubscribe" => {
                fields.only(&kind, &["type", "topic"])?;
                let topic = fields.string("topic")?.ok_or("field `topic` is missing")?;
                Ok(if kind == "subscribe" { Message::Subscribe(topic) } else { Message::Unsubscribe(topic) })
            }
            "ack" | "resume" => {
                fields.only(&kind, &["type", "seq"])?;
                let seq = fields.sequence("seq")?;
                Ok(if kind == "ack" { Message::Ack(seq) } else { Message::Resume(seq) })
            }
            other => Err(format!("unknown message type `{other}` (expected {TYPES})")),
        }
    }
}

impl Publish<'_> {
    /// Writes the data event, taking what the message leaves unset from `frame`.
    fn write(&self, frame: &Item<'_>, out: &mut BatchBuilder) {
        let raw = self.data.get();
        let text = if raw.starts_with('"') { serde_json::from_str::<String>(raw).ok() } else { None };
        let (payload, default_type) = match &text {
            Some(text) => (text.as_bytes(), TEXT),
            None => (raw.as_bytes(), JSON),
        };
        let mut event = out.item(Kind::Data);
        event
            .sequence(frame.sequence())
            .content_type(self.content_type.as_deref().unwrap_or(default_type))
            .payload(payload);
        if self.ack {
            event.ack_requested();
        }
        if let Some(id) = self.id.as_deref().or(frame.id()) {
            event.id(id);
        }
        if let Some(client_id) = frame.client_id() {
            event.client_id(client_id);
        }
        if let Some(destination) = self.topic.as_deref().or(frame.destination()) {
            event.destination(destination);
        }
        if let Some(key) = self.key.as_deref().map(str::as_bytes).or(frame.key()) {
            event.key(key);
        }
        for (name, value) in frame.headers() {
            event.header(name, value);
        }
        for (name, value) in &self.headers {
            event.header(name, value.as_bytes());
        }
    }
}

/// The fields of a JSON object, each still as raw JSON so that every field is
/// type-checked with a message naming it.
struct Fields<'a> {
    /// The fields by name. A repeated name keeps its last value, as in JavaScript.
    map: BTreeMap<String, &'a RawValue>,
}

impl<'a> Fields<'a> {
    /// The fields of `value`; `what` names it in errors (`message`, ``field `headers` ``).
    fn of(what: &str, value: &'a RawValue) -> Result<Self, String> {
        if !value.get().starts_with('{') {
            return Err(format!("{what} must be a JSON object, got {}", type_of(value)));
        }
        let map = serde_json::from_str(value.get()).map_err(|err| format!("{what}: {err}"))?;
        Ok(Self { map })
    }

    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.map.get(name).copied()
    }

    /// Refuses fields outside `known`, naming the message type `kind`.
    fn only(&self, kind: &str, known: &[&str]) -> Result<(), String> {
        match self.map.keys().find(|name| !known.contains(&name.as_str())) {
            None => Ok(()),
            Some(name) => Err(format!("unknown field `{name}` in a `{kind}` message (expected {})", known.join(", "))),
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>, String> {
        self.get(name).map(|value| as_string(name, value)).transpose()
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, String> {
        self.get(name)
            .map(|value| match value.get() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("field `{name}` must be a boolean, got {}", type_of(value))),
            })
            .transpose()
    }

    fn sequence(&self, name: &str) -> Result<u64, String> {
        let value = self.get(name).ok_or_else(|| format!("field `{name}` is missing"))?;
        serde_json::from_str::<u64>(value.get()).map_err(|_| {
            let got =
                if type_of(value) == "a number" { format!("`{}`", value.get()) } else { type_of(value).to_owned() };
            format!("field `{name}` must be an integer from 0 to 2^64-1, got {got}")
        })
    }

    /// Every field as a string, names lower-cased and in name order (the object's own
    /// order is not kept); `field` names the object in errors.
    fn strings(&self, field: &str) -> Result<Vec<(String, String)>, String> {
        let mut strings = self
            .map
            .iter()
            .map(|(name, value)| {
                let text = as_string(&format!("{field}.{name}"), value)?;
                Ok((name.to_lowercase(), text))
            })
            .collect::<Result<Vec<_>, String>>()?;
        strings.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(strings)
    }
}

fn as_string(name: &str, value: &RawValue) -> Result<String, String> {
    serde_json::from_str::<String>(value.get())
        .map_err(|_| format!("field `{name}` must be a string, got {}", type_of(value)))
}

/// The JSON type of `value`, with its article, for error messages. Raw values carry
/// no whitespace around them, so the first character decides.
fn type_of(value: &RawValue) -> &'static str {
    match value.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

mediation_adapter_sdk::export_adapter!(WebSocket);

#[cfg(test)]
mod tests {
    use super::*;
    use mediation_adapter_sdk::guest::testing::{self, Output};
    use mediation_adapter_sdk::guest::{Direction, ErrorKind};

    fn adapter(settings: &[(&str, &str)]) -> Result<WebSocket, String> {
        testing::configure(settings)
    }

    fn raw() -> WebSocket {
        adapter(&[]).expect("defaults")
    }

    fn envelope() -> WebSocket {
        adapter(&[("protocol", "envelope")]).expect("valid setting")
    }

    /// A text frame from client `c1` on a connection bound to destination `chat`.
    fn text(input: &mut BatchBuilder, json: &str) {
        input.item(Kind::Data).sequence(5).client_id("c1").destination("chat").payload(json.as_bytes());
    }

    #[test]
    fn raw_frames_become_data_events() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).sequence(1).client_id("c1").destination("chat").payload("héllo".as_bytes());
        input
            .item(Kind::Data)
            .sequence(2)
            .client_id("c1")
            .destination("chat")
            .binary(true)
            .payload(&[0, 159, 146, 150]);
        input.item(Kind::Data).binary(true).content_type("image/png").payload(&[0x89, b'P']);
        let output = Output::map(&raw(), Direction::Upstream, input);
        assert_eq!(output.produced, vec![1, 1, 1]);
        assert_eq!(output.errors, vec![]);
        let out = output.batch();

        let text = out.get(0);
        assert_eq!(text.kind(), Kind::Data);
        assert_eq!(text.payload(), "héllo".as_bytes());
        assert_eq!(text.content_type(), Some("text/plain; charset=utf-8"));
        assert!(!text.is_binary());
        assert_eq!(text.sequence(), 1);
        assert_eq!(text.client_id(), Some("c1"));
        assert_eq!(text.destination(), Some("chat"));

        let binary = out.get(1);
        assert_eq!(binary.payload(), &[0, 159, 146, 150]);
        assert_eq!(binary.content_type(), Some("application/octet-stream"));
        assert!(binary.is_binary());
        assert_eq!(binary.sequence(), 2);
        assert_eq!(binary.client_id(), Some("c1"));

        let typed = out.get(2);
        assert_eq!(typed.content_type(), Some("image/png"));
        assert!(typed.is_binary());
        assert_eq!(typed.payload(), &[0x89, b'P']);
    }

    #[test]
    fn raw_text_frames_must_be_utf8() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(&[b'o', 0xc0, b'k']);
        input.item(Kind::Data).payload(b"fine");
        let output = Output::map(&raw(), Direction::Upstream, input);
        assert_eq!(output.produced, vec![0, 1]);
        assert_eq!(
            output.errors,
            vec![(0, ErrorKind::Malformed, String::from("text frame is not UTF-8: invalid UTF-8 at byte 1"))]
        );
        assert_eq!(output.batch().get(0).payload(), b"fine");
    }

    #[test]
    fn envelope_publish_maps_every_field() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .sequence(5)
            .id("frame-id")
            .client_id("c1")
            .destination("chat")
            .header("traceparent", b"00-abc")
            .payload(
                br#"{"type":"publish","topic":"orders/eu","id":"m-1","key":"cust-9","ack":true,
                     "headers":{"Reply-To":"inbox/c1","correlation-id":"x\"y"},
                     "data": {"b": 1, "a": [2.50, null]}}"#,
            );
        let output = Output::map(&envelope(), Direction::Upstream, input);
        assert_eq!(output.produced, vec![1]);
        assert_eq!(output.errors, vec![]);
        let out = output.batch();
        let event = out.get(0);
        assert_eq!(event.kind(), Kind::Data);
        assert_eq!(event.payload(), br#"{"b": 1, "a": [2.50, null]}"#);
        assert_eq!(event.content_type(), Some("application/json"));
        assert!(!event.is_binary());
        assert!(event.ack_requested());
        assert_eq!(event.sequence(), 5);
        assert_eq!(event.id(), Some("m-1"));
        assert_eq!(event.client_id(), Some("c1"));
        assert_eq!(event.destination(), Some("orders/eu"));
        assert_eq!(event.key(), Some(&b"cust-9"[..]));
        assert_eq!(
            event.headers().collect::<Vec<_>>(),
            vec![("traceparent", &b"00-abc"[..]), ("correlation-id", &b"x\"y"[..]), ("reply-to", &b"inbox/c1"[..]),]
        );
    }

    #[test]
    fn envelope_publish_defaults_come_from_the_frame_and_the_data() {
        let mut input = BatchBuilder::default();
        text(&mut input, r#"{"type":"publish","data":"line 1\nsnow ☃ \"quoted\""}"#);
        text(&mut input, r#"{"type":"publish","data":"<a/>","content_type":"application/xml","ack":false}"#);
        text(&mut input, r#"{"type":"publish","data":null}"#);
        text(&mut input, r#"{"type":"publish","data":[1,"two"],"content_type":"application/vnd.x+json"}"#);
        let output = Output::map(&envelope(), Direction::Upstream, input);
        assert_eq!(output.produced, vec![1, 1, 1, 1]);
        let out = output.batch();

        let string = out.get(0);
        assert_eq!(string.payload(), "line 1\nsnow ☃ \"quoted\"".as_bytes());
        assert_eq!(string.content_type(), Some("text/plain; charset=utf-8"));
        assert_eq!(string.destination(), Some("chat"));
        assert_eq!(string.id(), None);
        assert_eq!(string.key(), None);
        assert!(!string.ack_requested());
        assert_eq!(string.headers().len(), 0);

        let xml = out.get(1);
        assert_eq!(xml.payload(), b"<a/>");
        assert_eq!(xml.content_type(), Some("application/xml"));
        assert!(!xml.ack_requested());

        let null = out.get(2);
        assert_eq!(null.payload(), b"null");
        assert_eq!(null.content_type(), Some("application/json"));

        let array = out.get(3);
        assert_eq!(array.payload(), br#"[1,"two"]"#);
        assert_eq!(array.content_type(), Some("application/vnd.x+json"));
    }

    #[test]
    fn envelope_control_messages() {
        let mut input = BatchBuilder::default();
        text(&mut input, r#"{"type":"subscribe","topic":"orders/*"}"#);
        text(&mut input, r#" { "topic" : "orders/#", "type" : "unsubscribe" } "#);
        text(&mut input, r#"{"type":"ack","seq":42}"#);
        text(&mut input, r#"{"type":"resume","seq":18446744073709551615}"#);
        let output = Output::map(&envelope(), Direction::Upstream, input);
        assert_eq!(output.produced, vec![1, 1, 1, 1]);
        assert_eq!(output.errors, vec![]);
        let out = output.batch();
        let summary: Vec<_> =
            out.iter().map(|e| (e.kind(), e.destination(), e.sequence(), e.client_id(), e.payload())).collect();
        assert_eq!(
            summary,
            vec![
                (Kind::Subscribe, Some("orders/*"), 5, Some("c1"), &b""[..]),
                (Kind::Unsubscribe, Some("orders/#"), 5, Some("c1"), &b""[..]),
                (Kind::Ack, Some("chat"), 42, Some("c1"), &b""[..]),
                (Kind::Resume, Some("chat"), u64::MAX, Some("c1"), &b""[..]),
            ]
        );
    }

    #[test]
    fn envelope_errors_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("not json", "text frame is not JSON: expected ident at line 1 column 2"),
            (r#"{"type":"ack","seq":1"#, "text frame is not JSON: EOF while parsing an object at line 1 column 21"),
            ("[1]", "message must be a JSON object, got an array"),
            (r#""publish""#, "message must be a JSON object, got a string"),
            ("{}", "field `type` is missing (expected publish, subscribe, unsubscribe, ack, resume)"),
            (r#"{"type":5}"#, "field `type` must be a string, got a number"),
            (r#"{"type":"foo"}"#, "unknown message type `foo` (expected publish, subscribe, unsubscribe, ack, resume)"),
            (r#"{"type":"publish"}"#, "field `data` is missing"),
            (r#"{"type":"publish","data":1,"topic":7}"#, "field `topic` must be a string, got a number"),
            (r#"{"type":"publish","data":1,"id":{}}"#, "field `id` must be a string, got an object"),
            (r#"{"type":"publish","data":1,"ack":"yes"}"#, "field `ack` must be a boolean, got a string"),
            (r#"{"type":"publish","data":1,"headers":[]}"#, "field `headers` must be a JSON object, got an array"),
            (
                r#"{"type":"publish","data":1,"headers":{"X-A":true}}"#,
                "field `headers.X-A` must be a string, got a boolean",
            ),
            (
                r#"{"type":"publish","data":1,"topc":"x"}"#,
                "unknown field `topc` in a `publish` message \
                 (expected type, topic, data, id, key, ack, headers, content_type)",
            ),
            (r#"{"type":"subscribe"}"#, "field `topic` is missing"),
            (r#"{"type":"subscribe","topic":null}"#, "field `topic` must be a string, got null"),
            (
                r#"{"type":"unsubscribe","topic":"a","seq":1}"#,
                "unknown field `seq` in a `unsubscribe` message (expected type, topic)",
            ),
            (r#"{"type":"ack"}"#, "field `seq` is missing"),
            (r#"{"type":"ack","seq":-1}"#, "field `seq` must be an integer from 0 to 2^64-1, got `-1`"),
            (r#"{"type":"ack","seq":1.0}"#, "field `seq` must be an integer from 0 to 2^64-1, got `1.0`"),
            (
                r#"{"type":"resume","seq":18446744073709551616}"#,
                "field `seq` must be an integer from 0 to 2^64-1, got `18446744073709551616`",
            ),
            (r#"{"type":"resume","seq":"7"}"#, "field `seq` must be an integer from 0 to 2^64-1, got a string"),
        ];
        let mut input = BatchBuilder::default();
        for (frame, _) in cases {
            text(&mut input, frame);
        }
        let output = Output::map(&envelope(), Direction::Upstream, input);
        assert_eq!(output.produced, vec![0; cases.len()]);
        let expected: Vec<_> = cases
            .iter()
            .enumerate()
            .map(|(i, (_, message))| (i as u32, ErrorKind::Malformed, message.to_string()))
            .collect();
        assert_eq!(output.errors, expected);
        assert_eq!(output.batch().len(), 0);
    }

    #[test]
    fn envelope_refuses_binary_and_non_utf8_frames() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).binary(true).payload(br#"{"type":"ack","seq":1}"#);
        input.item(Kind::Data).payload(b"{\"type\":\"\xff\"}");
        let output = Output::map(&envelope(), Direction::Upstream, input);
        assert_eq!(output.produced, vec![0, 0]);
        assert_eq!(
            output.errors,
            vec![
                (
                    0,
                    ErrorKind::Malformed,
                    String::from("binary frames are not accepted with protocol `envelope`; send a JSON text frame")
                ),
                (1, ErrorKind::Malformed, String::from("text frame is not UTF-8: invalid UTF-8 at byte 9")),
            ]
        );
    }

    #[test]
    fn raw_downstream_sends_payloads_as_text_or_binary_frames() {
        let cases: &[(Option<&str>, bool, &[u8], bool)] = &[
            (Some("application/json"), false, br#"{"a":1}"#, false),
            (Some("text/csv; charset=utf-8"), false, b"a,b", false),
            (Some("application/problem+json"), false, b"{}", false),
            (Some("application/x-ndjson"), false, b"{}\n{}", false),
            (Some("application/xml"), false, b"<a/>", false),
            (None, false, b"no type", false),
            (Some("application/octet-stream"), false, b"ascii bytes", true),
            (Some("image/png"), false, b"png", true),
            (Some("text/plain"), true, b"flagged", true),
            (Some("text/plain"), false, &[0xff, 0xfe], true),
            (None, false, &[0xc3], true),
        ];
        let mut input = BatchBuilder::default();
        for (i, (content_type, binary, payload, _)) in cases.iter().enumerate() {
            let mut event = input.item(Kind::Data);
            event
                .sequence(100 + i as u64)
                .id("e")
                .client_id("c2")
                .destination("t")
                .key(b"k")
                .header("h", b"v")
                .binary(*binary)
                .payload(payload);
            if let Some(content_type) = content_type {
                event.content_type(content_type);
            }
        }
        let output = Output::map(&raw(), Direction::Downstream, input);
        assert_eq!(output.errors, vec![]);
        let out = output.batch();
        assert_eq!(out.len(), cases.len());
        for (i, (content_type, _, payload, binary)) in cases.iter().enumerate() {
            let frame = out.get(i);
            assert_eq!(frame.is_binary(), *binary, "case {i}: {content_type:?}");
            assert_eq!(frame.payload(), *payload, "case {i}");
            assert_eq!(frame.content_type(), *content_type, "case {i}");
            assert_eq!(frame.sequence(), 100 + i as u64);
            assert_eq!(frame.id(), Some("e"));
            assert_eq!(frame.client_id(), Some("c2"));
            assert_eq!(frame.destination(), Some("t"));
            assert_eq!(frame.key(), None);
            assert_eq!(frame.headers().len(), 0);
            assert!(!frame.ack_requested());
        }
    }

    #[test]
    fn envelope_downstream_wraps_each_event_in_a_message_object() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .sequence(31)
            .id("e-31")
            .client_id("c3")
            .destination("orders/eu")
            .content_type("application/json")
            .header("correlation-id", b"abc")
            .header("raw", &[0x80])
            .payload(b"{\n  \"qty\": 2,\n  \"sku\": \"A 1\"\n}\n");
        input.item(Kind::Data).sequence(32).content_type("text/plain").payload("tab\there ☃".as_bytes());
        input.item(Kind::Data).sequence(33).destination("blobs").binary(true).payload(&[1, 2, 3, 4]);
        let output = Output::map(&envelope(), Direction::Downstream, input);
        assert_eq!(output.produced, vec![1, 1, 1]);
        let out = output.batch();
        let frames: Vec<_> =
            out.iter().map(|f| String::from_utf8(f.payload().to_vec()).expect("envelope frames are text")).collect();
        assert_eq!(
            frames,
            vec![
                concat!(
                    r#"{"type":"message","seq":31,"id":"e-31","topic":"orders/eu","content_type":"application/json","#,
                    r#""headers":{"correlation-id":"abc"},"headers_base64":{"raw":"gA=="},"data":{"qty":2,"sku":"A 1"}}"#
                ),
                r#"{"type":"message","seq":32,"content_type":"text/plain","data":"tab\there ☃"}"#,
                r#"{"type":"message","seq":33,"topic":"blobs","data_base64":"AQIDBA=="}"#,
            ]
        );
        let first = out.get(0);
        assert!(!first.is_binary());
        assert_eq!(first.content_type(), Some("application/json"));
        assert_eq!(first.sequence(), 31);
        assert_eq!(first.id(), Some("e-31"));
        assert_eq!(first.client_id(), Some("c3"));
        assert_eq!(first.destination(), Some("orders/eu"));
        assert!(!out.get(2).is_binary());
    }

    #[test]
    fn control_items_are_not_sent_to_clients() {
        for adapter in [raw(), envelope()] {
            let mut input = BatchBuilder::default();
            input.item(Kind::Unsubscribe).destination("x");
            let output = Output::map(&adapter, Direction::Downstream, input);
            assert_eq!(output.produced, vec![0]);
            assert_eq!(
                output.errors,
                vec![(
                    0,
                    ErrorKind::Unsupported,
                    String::from("only data events are sent to clients, not `unsubscribe` items")
                )]
            );
        }
    }

    #[test]
    fn refuses_unknown_and_invalid_settings() {
        assert_eq!(adapter(&[("mode", "raw")]).expect_err("unknown"), "unknown setting `mode` (known: protocol)");
        assert_eq!(
            adapter(&[("protocol", "json")]).expect_err("bad choice"),
            "setting `protocol`: `json` is not one of raw, envelope"
        );
    }
}
