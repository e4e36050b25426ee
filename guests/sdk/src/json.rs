//! Encoding helpers the entrypoint adapters share, so that every client protocol
//! renders an event the same way: an event as one JSON object ([`write_event`]),
//! JSON strings, standard base64, media-type tests, the output item that carries
//! an encoded event back to the host ([`client_frame`]), and the two together
//! ([`event_frame`]).
//!
//! The JSON is written by hand rather than through `serde_json::Value` for two
//! reasons: the fields must come out in a documented order (a `Value` map sorts its
//! keys), and an embedded JSON payload must keep its own key order and number
//! spelling, which a round trip through `Value` would not.

use std::str;

use serde_json::value::RawValue;

use crate::guest::ItemError;
use crate::layout::{BatchBuilder, Item, ItemWriter, Kind};

/// The media type of a content type: what comes before its parameters, trimmed.
/// `"Text/Plain; charset=utf-8"` gives `"Text/Plain"`; compare it case-insensitively.
#[must_use]
pub fn essence(content_type: &str) -> &str {
    content_type.split_once(';').map_or(content_type, |(essence, _)| essence).trim()
}

/// True for `application/json` and every `+json` type (`application/cloudevents+json`).
#[must_use]
pub fn is_json(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence.eq_ignore_ascii_case("application/json") || ends_with_ignore_case(essence, "+json")
}

/// True for the media types whose payload is text: `text/*`, the JSON types (see
/// [`is_json`]), `application/x-ndjson` and `application/xml`.
#[must_use]
pub fn is_textual(content_type: &str) -> bool {
    let essence = essence(content_type);
    starts_with_ignore_case(essence, "text/")
        || is_json(essence)
        || essence.eq_ignore_ascii_case("application/x-ndjson")
        || essence.eq_ignore_ascii_case("application/xml")
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    text.len()
        .checked_sub(suffix.len())
        .and_then(|start| text.as_bytes().get(start..))
        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix.as_bytes()))
}

/// Checks that `bytes` hold exactly one JSON value, whitespace around it allowed.
///
/// # Errors
/// `serde_json`'s error, whose text names the problem and its line and column
/// (`expected value at line 1 column 5`).
pub fn validate(bytes: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<&RawValue>(bytes).map(|_| ())
}

/// `bytes` as text.
///
/// # Errors
/// A message naming the offset of the first byte that is not UTF-8
/// (`invalid UTF-8 at byte 3`).
pub fn utf8(bytes: &[u8]) -> Result<&str, String> {
    str::from_utf8(bytes).map_err(|err| format!("invalid UTF-8 at byte {}", err.valid_up_to()))
}

/// Appends `text` as a JSON string: quoted, with `"`, `\` and control characters
/// escaped. Everything else, including non-ASCII text, is copied as it is.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(text.len() + 2);
    out.push(b'"');
    let bytes = text.as_bytes();
    // Runs of bytes that need no escape are copied in one go.
    let mut clean = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[b'\\', b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]],
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean..i]);
        out.extend_from_slice(escape);
        clean = i + 1;
    }
    out.extend_from_slice(&bytes[clean..]);
    out.push(b'"');
}

/// Appends valid JSON (see [`validate`]) without the whitespace between its tokens,
/// so that an embedded payload keeps its key order and number spelling but fits
/// on one line.
pub fn write_compact(out: &mut Vec<u8>, json: &[u8]) {
    out.reserve(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(byte);
            in_string = byte == b'"';
        }
    }
}

/// Appends `bytes` in standard base64 (RFC 4648 section 4: `+`, `/` and `=` padding).
pub fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |group: u32, shift: u32| ALPHABET[(group >> shift & 0x3f) as usize];
    out.reserve(bytes.len().div_ceil(3) * 4);
    let mut chunks = bytes.chunks_exact(3);
    for chunk in &mut chunks {
        let group = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        out.extend_from_slice(&[sextet(group, 18), sextet(group, 12), sextet(group, 6), sextet(group, 0)]);
    }
    match *chunks.remainder() {
        [a] => {
            let group = u32::from(a) << 16;
            out.extend_from_slice(&[sextet(group, 18), sextet(group, 12), b'=', b'=']);
        }
        [a, b] => {
            let group = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[sextet(group, 18), sextet(group, 12), sextet(group, 6), b'=']);
        }
        _ => {}
    }
}

/// How [`write_event`] renders an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStyle {
    /// When set, written first as `"type":<tag>` (the WebSocket envelope's `"message"`).
    pub type_tag: Option<&'static str>,
    /// Whether the event's headers are written.
    pub headers: bool,
}

/// Appends `item` as one compact JSON object, fields in this order, absent ones
/// omitted:
///
/// ```text
/// {"type":<tag>,"seq":N,"id":..,"topic":..,"content_type":..,
///  "headers":{..},"headers_base64":{..},"data":.. | "data_base64":".."}
/// ```
///
/// - `type` only with [`EventStyle::type_tag`]; `seq` always (the replay sequence);
///   `topic` is the destination.
/// - `headers` holds the headers whose value is UTF-8, as strings; `headers_base64`
///   the others, base64-encoded. Each is omitted when empty, and both when
///   [`EventStyle::headers`] is off. A repeated header name is written repeatedly,
///   in event order.
/// - `data` embeds the payload as JSON (whitespace between tokens removed) when the
///   content type is JSON ([`is_json`]) and the payload parses; otherwise as a JSON
///   string when the item is not flagged binary and the payload is UTF-8; otherwise
///   the payload goes to `data_base64` in standard base64.
pub fn write_event(out: &mut Vec<u8>, item: &Item<'_>, style: EventStyle) {
    out.push(b'{');
    if let Some(tag) = style.type_tag {
        out.extend_from_slice(b"\"type\":");
        write_str(out, tag);
        out.push(b',');
    }
    out.extend_from_slice(b"\"seq\":");
    out.extend_from_slice(item.sequence().to_string().as_bytes());
    for (field, value) in [("id", item.id()), ("topic", item.destination()), ("content_type", item.content_type())] {
        if let Some(value) = value {
            out.push(b',');
            write_str(out, field);
            out.push(b':');
            write_str(out, value);
        }
    }
    if style.headers {
        write_headers(out, "headers", item, false);
        write_headers(out, "headers_base64", item, true);
    }
    write_data(out, item);
    out.push(b'}');
}

/// Appends `,"<field>":{..}` with the headers whose value is UTF-8 (`base64` off) or
/// is not (`base64` on); nothing when there are none.
fn write_headers(out: &mut Vec<u8>, field: &str, item: &Item<'_>, base64: bool) {
    let mut open = false;
    for (name, value) in item.headers() {
        let text = str::from_utf8(value);
        if text.is_ok() == base64 {
            continue;
        }
        out.push(b',');
        if !open {
            write_str(out, field);
            out.extend_from_slice(b":{");
            open = true;
        }
        write_str(out, name);
        out.push(b':');
        match text {
            Ok(text) => write_str(out, text),
            Err(_) => {
                out.push(b'"');
                write_base64(out, value);
                out.push(b'"');
            }
        }
    }
    if open {
        out.push(b'}');
    }
}

fn write_data(out: &mut Vec<u8>, item: &Item<'_>) {
    let payload = item.payload();
    if item.content_type().is_some_and(is_json) && validate(payload).is_ok() {
        out.extend_from_slice(b",\"data\":");
        write_compact(out, payload);
        return;
    }
    match str::from_utf8(payload) {
        Ok(text) if !item.is_binary() => {
            out.extend_from_slice(b",\"data\":");
            write_str(out, text);
        }
        _ => {
            out.extend_from_slice(b",\"data_base64\":\"");
            write_base64(out, payload);
            out.push(b'"');
        }
    }
}

/// Starts the output item that carries `item` encoded for a client: a data item with
/// the event's sequence, id, client id and destination, so that the host can still
/// filter events and target clients after encoding. The caller sets the payload, the
/// content type and the binary flag of the frame.
///
/// # Errors
/// Unsupported when `item` is not a data event: subscriptions, acknowledgements and
/// resumes travel from clients, never to them.
pub fn client_frame<'b>(out: &'b mut BatchBuilder, item: &Item<'_>) -> Result<ItemWriter<'b>, ItemError> {
    let kind = match item.kind() {
        Kind::Data => "data",
        Kind::Subscribe => "subscribe",
        Kind::Unsubscribe => "unsubscribe",
        Kind::Ack => "ack",
        Kind::Resume => "resume",
    };
    if item.kind() != Kind::Data {
        return Err(ItemError::unsupported(format!("only data events are sent to clients, not `{kind}` items")));
    }
    let mut frame = out.item(Kind::Data);
    frame.sequence(item.sequence());
    if let Some(id) = item.id() {
        frame.id(id);
    }
    if let Some(client_id) = item.client_id() {
        frame.client_id(client_id);
    }
    if let Some(destination) = item.destination() {
        frame.destination(destination);
    }
    Ok(frame)
}

/// Writes the client frame that carries `item` as one JSON object ([`write_event`] in
/// `style`): a [`client_frame`] with content type `application/json`, not flagged
/// binary. HTTP GET responses and WebSocket envelope messages are such frames.
///
/// # Errors
/// Unsupported when `item` is not a data event, as [`client_frame`].
pub fn event_frame(out: &mut BatchBuilder, item: &Item<'_>, style: EventStyle) -> Result<(), ItemError> {
    // Room for the payload and the fields around it, so that most events need one allocation.
    let mut body = Vec::with_capacity(item.payload().len() + 96);
    write_event(&mut body, item, style);
    client_frame(out, item)?.content_type("application/json").payload(&body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::ErrorKind;
    use crate::layout::Batch;

    fn base64(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        write_base64(&mut out, bytes);
        String::from_utf8(out).expect("base64 is ASCII")
    }

    fn json_str(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text);
        String::from_utf8(out).expect("escaped text stays UTF-8")
    }

    fn compact(json: &str) -> String {
        let mut out = Vec::new();
        write_compact(&mut out, json.as_bytes());
        String::from_utf8(out).expect("compacted JSON stays UTF-8")
    }

    fn event(build: impl FnOnce(&mut BatchBuilder), style: EventStyle) -> String {
        let mut builder = BatchBuilder::default();
        build(&mut builder);
        let (data, index) = builder.into_parts();
        let batch = Batch::parse(&data, &index).expect("test batch is valid");
        let mut out = Vec::new();
        write_event(&mut out, &batch.get(0), style);
        String::from_utf8(out).expect("event JSON is UTF-8")
    }

    const FULL: EventStyle = EventStyle { type_tag: None, headers: true };

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff, 0xfe]), "+//+");
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_controls_only() {
        assert_eq!(json_str(""), r#""""#);
        assert_eq!(json_str("plain é ☃"), r#""plain é ☃""#);
        assert_eq!(json_str("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_str("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(json_str("\u{0}x\u{1f}"), r#""\u0000x\u001f""#);
        let escaped = json_str("q\"\u{1}\\end\u{7f}");
        let back: String = serde_json::from_str(&escaped).expect("escaped string parses");
        assert_eq!(back, "q\"\u{1}\\end\u{7f}");
    }

    #[test]
    fn compact_drops_whitespace_outside_strings_only() {
        assert_eq!(compact("{ \"b\" : [1, 2.50],\n\t\"a\": \"x  \\\" y\" }\r\n"), r#"{"b":[1,2.50],"a":"x  \" y"}"#);
        assert_eq!(compact(r#"["\\", " "]"#), r#"["\\"," "]"#);
    }

    #[test]
    fn media_types_are_classified_ignoring_case_and_parameters() {
        assert_eq!(essence(" Text/Plain ; charset=utf-8"), "Text/Plain");
        assert_eq!(essence("application/json"), "application/json");
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/cloudevents+json"));
        assert!(!is_json("application/x-ndjson"));
        assert!(!is_json("text/json5"));
        for textual in [
            "text/plain",
            "TEXT/csv; charset=utf-8",
            "application/json",
            "application/vnd.api+json",
            "application/x-ndjson",
            "application/xml",
        ] {
            assert!(is_textual(textual), "{textual}");
        }
        for binary in ["application/octet-stream", "image/png", "application/xml-dtd", "json", ""] {
            assert!(!is_textual(binary), "{binary}");
        }
    }

    #[test]
    fn validate_reports_serde_positions() {
        assert!(validate(b" {\"a\": [1]} \n").is_ok());
        assert_eq!(validate(b"{\"a\": }").expect_err("invalid").to_string(), "expected value at line 1 column 7");
        assert_eq!(validate(b"1 2").expect_err("two values").to_string(), "trailing characters at line 1 column 3");
        assert_eq!(utf8(b"ab\xffc"), Err(String::from("invalid UTF-8 at byte 2")));
        assert_eq!(utf8("é".as_bytes()), Ok("é"));
    }

    #[test]
    fn event_embeds_json_payloads_compactly_in_field_order() {
        let json = event(
            |b| {
                b.item(Kind::Data)
                    .sequence(42)
                    .id("e-1")
                    .destination("orders/eu")
                    .content_type("application/json; charset=utf-8")
                    .header("correlation-id", b"c-9")
                    .header("reply-to", b"inbox")
                    .payload(b"{ \"z\": 1,\n  \"a\": [true, 1.50] }");
            },
            EventStyle { type_tag: Some("message"), headers: true },
        );
        assert_eq!(
            json,
            concat!(
                r#"{"type":"message","seq":42,"id":"e-1","topic":"orders/eu","#,
                r#""content_type":"application/json; charset=utf-8","#,
                r#""headers":{"correlation-id":"c-9","reply-to":"inbox"},"#,
                r#""data":{"z":1,"a":[true,1.50]}}"#
            )
        );
    }

    #[test]
    fn event_omits_absent_fields_and_falls_back_to_text_then_base64() {
        let bare = event(|b| _ = b.item(Kind::Data).payload(b"hi \"you\""), FULL);
        assert_eq!(bare, r#"{"seq":0,"data":"hi \"you\""}"#);

        let broken_json = event(|b| _ = b.item(Kind::Data).content_type("application/json").payload(b"{oops"), FULL);
        assert_eq!(broken_json, r#"{"seq":0,"content_type":"application/json","data":"{oops"}"#);

        let binary = event(|b| _ = b.item(Kind::Data).sequence(7).payload(&[0, 0xff, 0x10]), FULL);
        assert_eq!(binary, r#"{"seq":7,"data_base64":"AP8Q"}"#);

        let flagged = event(|b| _ = b.item(Kind::Data).binary(true).payload(b"abc"), FULL);
        assert_eq!(flagged, r#"{"seq":0,"data_base64":"YWJj"}"#);

        let empty = event(|b| _ = b.item(Kind::Data), FULL);
        assert_eq!(empty, r#"{"seq":0,"data":""}"#);
    }

    #[test]
    fn event_splits_text_and_binary_headers_or_leaves_them_out() {
        let build = |b: &mut BatchBuilder| {
            b.item(Kind::Data).header("trace", &[0xff, 0xfe]).header("a", b"1").header("a", b"2").payload(b"x");
        };
        assert_eq!(
            event(build, FULL),
            r#"{"seq":0,"headers":{"a":"1","a":"2"},"headers_base64":{"trace":"//4="},"data":"x"}"#
        );
        let without = EventStyle { type_tag: None, headers: false };
        assert_eq!(event(build, without), r#"{"seq":0,"data":"x"}"#);
    }

    #[test]
    fn client_frame_keeps_routing_fields_and_refuses_control_items() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .sequence(9)
            .id("e")
            .client_id("c1")
            .destination("t")
            .key(b"k")
            .content_type("text/plain")
            .header("h", b"v")
            .ack_requested();
        input.item(Kind::Ack).sequence(3);
        let (data, index) = input.into_parts();
        let batch = Batch::parse(&data, &index).expect("test batch is valid");

        let mut out = BatchBuilder::default();
        client_frame(&mut out, &batch.get(0)).expect("data item").payload(b"frame");
        let error = client_frame(&mut out, &batch.get(1)).expect_err("ack item");
        assert_eq!(error.kind, ErrorKind::Unsupported);
        assert_eq!(error.message, "only data events are sent to clients, not `ack` items");

        let (data, index) = out.into_parts();
        let frames = Batch::parse(&data, &index).expect("output batch is valid");
        assert_eq!(frames.len(), 1);
        let frame = frames.get(0);
        assert_eq!(frame.kind(), Kind::Data);
        assert_eq!(frame.flags(), 0);
        assert_eq!(frame.sequence(), 9);
        assert_eq!(frame.id(), Some("e"));
        assert_eq!(frame.client_id(), Some("c1"));
        assert_eq!(frame.destination(), Some("t"));
        assert_eq!(frame.key(), None);
        assert_eq!(frame.content_type(), None);
        assert_eq!(frame.headers().len(), 0);
        assert_eq!(frame.payload(), b"frame");
    }

    #[test]
    fn event_frame_carries_the_event_object_as_json() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).sequence(4).id("e").client_id("c").destination("t").binary(true).payload(b"x");
        input.item(Kind::Subscribe).destination("t");
        let (data, index) = input.into_parts();
        let batch = Batch::parse(&data, &index).expect("test batch is valid");

        let mut out = BatchBuilder::default();
        let style = EventStyle { type_tag: Some("message"), headers: false };
        event_frame(&mut out, &batch.get(0), style).expect("data item");
        let error = event_frame(&mut out, &batch.get(1), style).expect_err("subscribe item");
        assert_eq!(error.message, "only data events are sent to clients, not `subscribe` items");

        let (data, index) = out.into_parts();
        let frames = Batch::parse(&data, &index).expect("output batch is valid");
        assert_eq!(frames.len(), 1);
        let frame = frames.get(0);
        assert_eq!(frame.payload(), br#"{"type":"message","seq":4,"id":"e","topic":"t","data_base64":"eA=="}"#);
        assert_eq!(frame.content_type(), Some("application/json"));
        assert!(!frame.is_binary());
        assert_eq!(
            (frame.sequence(), frame.id(), frame.client_id(), frame.destination()),
            (4, Some("e"), Some("c"), Some("t"))
        );
    }
}
