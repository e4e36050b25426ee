//! The Server-Sent Events entrypoint adapter: encodes each event as one complete SSE
//! frame (WHATWG HTML, "Server-sent events").
//!
//! # Mapping
//!
//! Downstream only (event to client); upstream items fail as unsupported, since an
//! SSE client sends nothing on its stream.
//!
//! Each data event becomes one output item whose payload is one frame:
//!
//! ```text
//! id: <sequence>\n
//! event: <name>\n          only when the event has the header named by `event_header`
//! data: <line 1>\n
//! data: <line 2>\n         one `data:` line per payload line
//! \n
//! ```
//!
//! - `id` is the event's replay sequence, so a reconnecting client's `Last-Event-ID`
//!   names where to resume.
//! - `event` is the value of the header named by `event_header` (matched ignoring
//!   ASCII case). A value that is not UTF-8 or holds a line break would break the
//!   framing, so the event fails as unsupported.
//! - The payload is split into lines at `\r\n`, `\r` and `\n`. An empty payload gives
//!   one `data: ` line, so the client still receives a `message` whose data is the
//!   empty string; a payload ending in a line break gives a final empty `data: `
//!   line, so the client's data ends with `\n` too. The client joins the lines with
//!   `\n`, so every line break arrives as `\n`.
//! - SSE carries text only. With `binary = refuse` a payload that is not UTF-8 fails
//!   as unsupported (a UTF-8 payload is sent as text even when flagged binary). With
//!   `binary = base64` a payload that is flagged binary or is not UTF-8 is sent as one
//!   `data:` line of standard base64; the `event:` line stays what the header says, so
//!   a client tells base64 data apart by its event name or topic.
//!
//! The output item keeps the event's sequence, id, client id and destination so that
//! the host can still filter and target clients; its content type is
//! `text/event-stream` and it is not flagged binary. Items that are not data events
//! (subscribe, unsubscribe, ack, resume) fail as unsupported. The encoding does not
//! depend on the session, so the host encodes each event once for all clients.
//!
//! # Settings
//!
//! | Setting | Default | Meaning |
//! |---|---|---|
//! | `event_header` | `sse-event` | The event header whose value becomes the `event:` line. Must not be empty. |
//! | `binary` | `refuse` | `refuse`: a payload that is not UTF-8 fails as unsupported. `base64`: a payload flagged binary or not UTF-8 is sent base64-encoded. |

use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Maps, Role, Settings};
use mediation_adapter_sdk::{BatchBuilder, Item, json};

/// What happens to a payload that is not text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binary {
    /// Fail the event as unsupported when the payload is not UTF-8.
    Refuse,
    /// Send binary payloads as standard base64.
    Base64,
}

/// Encodes events as Server-Sent Events frames.
#[derive(Debug)]
pub struct Sse {
    /// The event header whose value becomes the frame's `event:` line.
    event_header: String,
    /// What happens to payloads that are not text.
    binary: Binary,
}

impl Adapter for Sse {
    const ROLE: Role = Role::Entrypoint;
    const MAPS: Maps = Maps::Downstream;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&["event_header", "binary"])?;
        let event_header = settings.get_or("event_header", "sse-event").trim().to_owned();
        if event_header.is_empty() {
            return Err(String::from("setting `event_header`: must not be empty"));
        }
        let binary = match settings.choice("binary", &["refuse", "base64"], "refuse")? {
            "base64" => Binary::Base64,
            _ => Binary::Refuse,
        };
        Ok(Self { event_header, binary })
    }

    fn downstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        let event = item
            .header(&self.event_header)
            .map(|name| match std::str::from_utf8(name) {
                Ok(text) if !text.contains(['\r', '\n']) => Ok(text),
                _ => Err(ItemError::unsupported(format!(
                    "header `{}` must be one line of UTF-8 text to become the SSE event name",
                    self.event_header
                ))),
            })
            .transpose()?;

        let payload = item.payload();
        let base64;
        let data: &[u8] = match (json::utf8(payload), self.binary) {
            (Ok(_), Binary::Refuse) => payload,
            (Ok(_), Binary::Base64) if !item.is_binary() => payload,
            (Err(err), Binary::Refuse) => {
                return Err(ItemError::unsupported(format!(
                    "payload is not text ({err}); SSE carries text only (set `binary = base64` to send it base64-encoded)"
                )));
            }
            (_, Binary::Base64) => {
                let mut encoded = Vec::with_capacity(payload.len().div_ceil(3) * 4);
                json::write_base64(&mut encoded, payload);
                base64 = encoded;
                &base64
            }
        };

        let sequence = item.sequence().to_string();
        let mut parts: Vec<&[u8]> = vec![b"id: ", sequence.as_bytes(), b"\n"];
        if let Some(event) = event {
            parts.extend([&b"event: "[..], event.as_bytes(), b"\n"]);
        }
        for line in lines(data) {
            parts.extend([&b"data: "[..], line, b"\n"]);
        }
        parts.push(b"\n");
        json::client_frame(out, item)?.content_type("text/event-stream").payload_parts(&parts);
        Ok(())
    }
}

/// The lines of `text`, split at `\r\n`, `\r` and `\n` as an SSE client splits them.
/// Always at least one: an empty text is one empty line, and a text ending in a line
/// break ends with an empty line.
fn lines(text: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                i += if text.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                start = i;
            }
            _ => i += 1,
        }
    }
    lines.push(&text[start..]);
    lines
}

mediation_adapter_sdk::export_adapter!(Sse);

#[cfg(test)]
mod tests {
    use super::*;
    use mediation_adapter_sdk::Kind;
    use mediation_adapter_sdk::guest::testing::{self, Output};
    use mediation_adapter_sdk::guest::{Direction, ErrorKind};

    fn adapter(settings: &[(&str, &str)]) -> Result<Sse, String> {
        testing::configure(settings)
    }

    /// Encodes one data event with `payload` under the default settings and returns its frame.
    fn frame_of(payload: &[u8]) -> String {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).sequence(1).payload(payload);
        let output = Output::map(&adapter(&[]).expect("defaults"), Direction::Downstream, input);
        assert_eq!(output.errors, vec![]);
        output.frame(0)
    }

    #[test]
    fn frames_carry_sequence_event_name_and_keep_routing_fields() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .sequence(1234)
            .id("evt-9")
            .client_id("client-7")
            .destination("prices/eur")
            .content_type("application/json")
            .header("SSE-Event", b"price")
            .header("correlation-id", b"c")
            .payload(br#"{"p":1}"#);
        let output = Output::map(&adapter(&[]).expect("defaults"), Direction::Downstream, input);
        assert_eq!(output.produced, vec![1]);
        assert_eq!(output.frame(0), "id: 1234\nevent: price\ndata: {\"p\":1}\n\n");
        let out = output.batch();
        let frame = out.get(0);
        assert_eq!(frame.kind(), Kind::Data);
        assert_eq!(frame.sequence(), 1234);
        assert_eq!(frame.id(), Some("evt-9"));
        assert_eq!(frame.client_id(), Some("client-7"));
        assert_eq!(frame.destination(), Some("prices/eur"));
        assert_eq!(frame.content_type(), Some("text/event-stream"));
        assert!(!frame.is_binary());
        assert_eq!(frame.headers().len(), 0);
    }

    #[test]
    fn every_payload_line_becomes_a_data_line() {
        assert_eq!(frame_of(b"one"), "id: 1\ndata: one\n\n");
        assert_eq!(frame_of(b"a\nb\r\nc\rd"), "id: 1\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_eq!(frame_of(b""), "id: 1\ndata: \n\n");
        assert_eq!(frame_of(b"end\n"), "id: 1\ndata: end\ndata: \n\n");
        assert_eq!(frame_of(b"\r\n\r\n"), "id: 1\ndata: \ndata: \ndata: \n\n");
        assert_eq!(frame_of(b"x\r\r\ny"), "id: 1\ndata: x\ndata: \ndata: y\n\n");
        assert_eq!(frame_of("é: ☃".as_bytes()), "id: 1\ndata: é: ☃\n\n");
    }

    #[test]
    fn event_name_follows_the_configured_header_and_must_be_one_line() {
        let custom = adapter(&[("event_header", "kind")]).expect("valid setting");
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).sequence(2).header("sse-event", b"ignored").header("kind", b"update").payload(b"x");
        input.item(Kind::Data).sequence(3).header("kind", b"two\nlines").payload(b"y");
        input.item(Kind::Data).sequence(4).header("kind", &[0xff]).payload(b"z");
        let output = Output::map(&custom, Direction::Downstream, input);
        assert_eq!(output.produced, vec![1, 0, 0]);
        assert_eq!(output.frame(0), "id: 2\nevent: update\ndata: x\n\n");
        let message = "header `kind` must be one line of UTF-8 text to become the SSE event name";
        assert_eq!(
            output.errors,
            vec![
                (1, ErrorKind::Unsupported, String::from(message)),
                (2, ErrorKind::Unsupported, String::from(message)),
            ]
        );
    }

    #[test]
    fn binary_payloads_are_refused_by_default() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).sequence(5).payload(&[b'o', b'k', 0xc3]);
        input.item(Kind::Data).sequence(6).binary(true).payload(b"utf-8 anyway");
        let output = Output::map(&adapter(&[]).expect("defaults"), Direction::Downstream, input);
        assert_eq!(output.produced, vec![0, 1]);
        assert_eq!(
            output.errors,
            vec![(
                0,
                ErrorKind::Unsupported,
                String::from(
                    "payload is not text (invalid UTF-8 at byte 2); SSE carries text only \
                     (set `binary = base64` to send it base64-encoded)"
                )
            )]
        );
        assert_eq!(output.frame(0), "id: 6\ndata: utf-8 anyway\n\n");
    }

    #[test]
    fn base64_mode_encodes_flagged_and_invalid_payloads_only() {
        let base64 = adapter(&[("binary", "base64")]).expect("valid setting");
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).sequence(7).header("sse-event", b"blob").payload(&[0xff, 0xfe, b'\n']);
        input.item(Kind::Data).sequence(8).binary(true).payload(b"foobar");
        input.item(Kind::Data).sequence(9).payload(b"plain\ntext");
        let output = Output::map(&base64, Direction::Downstream, input);
        assert_eq!(output.produced, vec![1, 1, 1]);
        assert_eq!(output.frame(0), "id: 7\nevent: blob\ndata: //4K\n\n");
        assert_eq!(output.frame(1), "id: 8\ndata: Zm9vYmFy\n\n");
        assert_eq!(output.frame(2), "id: 9\ndata: plain\ndata: text\n\n");
    }

    #[test]
    fn control_items_and_upstream_fail_alone() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Subscribe).destination("a/*");
        input.item(Kind::Data).sequence(10).payload(b"after");
        let output = Output::map(&adapter(&[]).expect("defaults"), Direction::Downstream, input);
        assert_eq!(output.produced, vec![0, 1]);
        assert_eq!(
            output.errors,
            vec![(
                0,
                ErrorKind::Unsupported,
                String::from("only data events are sent to clients, not `subscribe` items")
            )]
        );
        assert_eq!(output.frame(0), "id: 10\ndata: after\n\n");

        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"hello");
        let output = Output::map(&adapter(&[]).expect("defaults"), Direction::Upstream, input);
        assert_eq!(output.produced, vec![0]);
        assert_eq!(
            output.errors,
            vec![(0, ErrorKind::Unsupported, String::from("this adapter does not map upstream"))]
        );
    }

    #[test]
    fn refuses_unknown_and_invalid_settings() {
        assert_eq!(
            adapter(&[("event", "x")]).expect_err("unknown"),
            "unknown setting `event` (known: event_header, binary)"
        );
        assert_eq!(
            adapter(&[("binary", "hex")]).expect_err("bad choice"),
            "setting `binary`: `hex` is not one of refuse, base64"
        );
        assert_eq!(adapter(&[("event_header", " ")]).expect_err("empty"), "setting `event_header`: must not be empty");
    }
}
