//! The HTTP GET entrypoint adapter: encodes each event for a client that polls or
//! streams over plain HTTP, as one compact JSON object.
//!
//! # Mapping
//!
//! Downstream only (event to client); upstream items fail as unsupported, since a
//! GET request carries no body to publish.
//!
//! Each data event becomes one output item whose payload is one JSON object on one
//! line, fields in this order and absent ones omitted:
//!
//! ```text
//! {"seq":N,"id":"..","topic":"..","content_type":"..","headers":{"name":"value"},
//!  "headers_base64":{"name":"..."},"data":..}          or "data_base64":".." instead of "data"
//! ```
//!
//! - `seq`: the event's replay sequence, always present.
//! - `id`, `topic` (the destination), `content_type`: when the event has them.
//! - `headers`: the headers whose value is UTF-8, as strings; `headers_base64`: the
//!   others, in standard base64. Each is omitted when empty, both when
//!   `include_headers` is `false`. A repeated header name is written repeatedly.
//! - `data`: the payload embedded as JSON (whitespace between tokens removed) when
//!   the content type is `application/json` or `*+json` and the payload parses;
//!   otherwise as a JSON string when the event is not flagged binary and the payload
//!   is UTF-8; otherwise the payload goes to `data_base64` in standard base64.
//!
//! The output item keeps the event's sequence, id, client id and destination so that
//! the host can still filter and target clients; its content type is
//! `application/json` and it is not flagged binary. Items that are not data events
//! (subscribe, unsubscribe, ack, resume) fail as unsupported. The encoding does not
//! depend on the session, so the host encodes each event once for all clients.
//!
//! # Settings
//!
//! | Setting | Default | Meaning |
//! |---|---|---|
//! | `include_headers` | `true` | `true` or `false`: whether `headers` and `headers_base64` are written. |

use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Maps, Role, Settings};
use mediation_adapter_sdk::json::{self, EventStyle};
use mediation_adapter_sdk::{BatchBuilder, Item};

/// Encodes events as JSON objects for HTTP GET clients.
#[derive(Debug)]
pub struct HttpGet {
    /// How each event is rendered: no type tag, headers as configured.
    style: EventStyle,
}

impl Adapter for HttpGet {
    const ROLE: Role = Role::Entrypoint;
    const MAPS: Maps = Maps::Downstream;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&["include_headers"])?;
        let headers = settings.choice("include_headers", &["true", "false"], "true")? == "true";
        Ok(Self { style: EventStyle { type_tag: None, headers } })
    }

    fn downstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        json::event_frame(out, item, self.style)
    }
}

mediation_adapter_sdk::export_adapter!(HttpGet);

#[cfg(test)]
mod tests {
    use super::*;
    use mediation_adapter_sdk::Kind;
    use mediation_adapter_sdk::guest::testing::{self, Output};
    use mediation_adapter_sdk::guest::{Direction, ErrorKind};

    fn adapter(settings: &[(&str, &str)]) -> Result<HttpGet, String> {
        testing::configure(settings)
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).expect("output is UTF-8")
    }

    #[test]
    fn encodes_each_event_as_one_json_object_keeping_routing_fields() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .sequence(17)
            .id("evt-1")
            .client_id("client-a")
            .destination("orders")
            .key(b"k1")
            .content_type("application/json")
            .header("correlation-id", b"c-1")
            .payload(b"{\"total\": 12.50, \"items\": [\"a\"]}");
        input
            .item(Kind::Data)
            .sequence(18)
            .destination("logs")
            .content_type("text/plain; charset=utf-8")
            .payload(b"line one\nline \"two\"");
        let output = Output::map(&adapter(&[]).expect("defaults"), Direction::Downstream, input);
        assert_eq!(output.produced, vec![1, 1]);
        assert!(output.errors.is_empty(), "{:?}", output.errors);
        let out = output.batch();

        let first = out.get(0);
        assert_eq!(
            text(first.payload()),
            concat!(
                r#"{"seq":17,"id":"evt-1","topic":"orders","content_type":"application/json","#,
                r#""headers":{"correlation-id":"c-1"},"data":{"total":12.50,"items":["a"]}}"#
            )
        );
        assert_eq!(first.kind(), Kind::Data);
        assert_eq!(first.sequence(), 17);
        assert_eq!(first.id(), Some("evt-1"));
        assert_eq!(first.client_id(), Some("client-a"));
        assert_eq!(first.destination(), Some("orders"));
        assert_eq!(first.content_type(), Some("application/json"));
        assert!(!first.is_binary());
        assert_eq!(first.key(), None);
        assert_eq!(first.headers().len(), 0);

        let second = out.get(1);
        assert_eq!(
            text(second.payload()),
            r#"{"seq":18,"topic":"logs","content_type":"text/plain; charset=utf-8","data":"line one\nline \"two\""}"#
        );
        assert_eq!(second.id(), None);
        assert_eq!(second.client_id(), None);
    }

    #[test]
    fn binary_payloads_and_headers_are_base64() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .sequence(3)
            .content_type("application/octet-stream")
            .binary(true)
            .header("trace", &[0xff, 0x00])
            .payload(&[0x01, 0x02, 0x03, 0xfe]);
        input.item(Kind::Data).sequence(4).content_type("application/json").payload(b"{not json");
        let output = Output::map(&adapter(&[]).expect("defaults"), Direction::Downstream, input);
        assert_eq!(output.produced, vec![1, 1]);
        let out = output.batch();
        assert_eq!(
            text(out.get(0).payload()),
            r#"{"seq":3,"content_type":"application/octet-stream","headers_base64":{"trace":"/wA="},"data_base64":"AQID/g=="}"#
        );
        assert!(!out.get(0).is_binary(), "the JSON object itself is text");
        assert_eq!(text(out.get(1).payload()), r#"{"seq":4,"content_type":"application/json","data":"{not json"}"#);
    }

    #[test]
    fn include_headers_false_leaves_headers_out() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).sequence(1).header("reply-to", b"inbox").header("bin", &[0xff]).payload(b"hi");
        let no_headers = adapter(&[("include_headers", "false")]).expect("valid setting");
        let output = Output::map(&no_headers, Direction::Downstream, input);
        let out = output.batch();
        assert_eq!(text(out.get(0).payload()), r#"{"seq":1,"data":"hi"}"#);
    }

    #[test]
    fn control_items_and_upstream_fail_alone() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Resume).sequence(5);
        input.item(Kind::Data).sequence(6).payload(b"ok");
        let output = Output::map(&adapter(&[]).expect("defaults"), Direction::Downstream, input);
        assert_eq!(output.produced, vec![0, 1]);
        assert_eq!(
            output.errors,
            vec![(0, ErrorKind::Unsupported, String::from("only data events are sent to clients, not `resume` items"))]
        );
        let out = output.batch();
        assert_eq!(out.len(), 1);
        assert_eq!(text(out.get(0).payload()), r#"{"seq":6,"data":"ok"}"#);

        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"{}");
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
            adapter(&[("include_header", "true")]).expect_err("typo"),
            "unknown setting `include_header` (known: include_headers)"
        );
        assert_eq!(
            adapter(&[("include_headers", "yes")]).expect_err("not a boolean"),
            "setting `include_headers`: `yes` is not one of true, false"
        );
    }
}
