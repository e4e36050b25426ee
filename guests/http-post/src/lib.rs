//! The HTTP POST entrypoint adapter: decodes each request body into one event, or
//! into one event per line for newline-delimited JSON.
//!
//! # Mapping
//!
//! Upstream only (client to broker); downstream items fail as unsupported, since a
//! POST is answered by the host, not with events.
//!
//! The input item is one request body: its payload, the request's content type
//! (parameters such as `; charset=utf-8` allowed), as id the `Idempotency-Key` when
//! the client sent one, and the destination the host chose. A request without a
//! content type counts as `application/octet-stream`.
//!
//! 1. The content type must match an entry of `content_types`, compared on its media
//!    type (parameters ignored) ignoring ASCII case; otherwise the body fails as
//!    unsupported (HTTP 415) with a message naming the content type and the accepted
//!    ones.
//! 2. By media type:
//!    - `application/x-ndjson`: one event per line. Lines end at `\n` (a `\r` before
//!      it is dropped) and are numbered from 1; lines holding only whitespace are
//!      skipped, the others are trimmed of surrounding whitespace and must each be one
//!      JSON value. Each event's payload is its line, content type
//!      `application/json`, and id `<id>:<line number>` when the body has an id. One
//!      invalid line fails the whole body as malformed (HTTP 400), naming the line:
//!      `line 3: expected value at line 1 column 5` (the position within the line).
//!      A body without any JSON line is malformed too.
//!    - `application/json` and `*+json`: the body must be one JSON value, else
//!      malformed: `body is not valid JSON: <serde_json's message with line and column>`.
//!    - Other textual types (`text/*`, `application/xml`): the body must be UTF-8,
//!      else malformed: `body is not UTF-8 text: invalid UTF-8 at byte N`.
//!    - Anything else is passed as it is.
//!
//!    Each of these gives one event whose payload is the body and whose content type
//!    is the request's, as sent.
//! 3. Every event is a data event flagged binary unless its media type is textual
//!    (`text/*`, `application/json`, `*+json`, `application/x-ndjson`,
//!    `application/xml`). It keeps the input's sequence, id (except for NDJSON lines),
//!    client id, key, ack-requested flag and headers, then gets the request headers that
//!    `forward_headers` selects, names lower-cased, in request order. Its destination
//!    is the value of the query parameter `destination_param` when that setting is set
//!    and the request has the parameter (an empty value is malformed), and otherwise
//!    the input's.
//!
//! # Settings
//!
//! | Setting | Default | Meaning |
//! |---|---|---|
//! | `content_types` | `application/json,application/x-ndjson,text/plain,application/octet-stream` | Comma-separated media types accepted: `type/subtype`, `type/*` or `*/*` (anything). Parameters are ignored. |
//! | `forward_headers` | `traceparent,tracestate` | Comma-separated request header names copied into every event's headers, lower-cased. A trailing `*` matches a prefix (`x-tenant-*`; `*` alone: every header). Empty: none. |
//! | `destination_param` | unset | Name of the query parameter whose value becomes the event destination. Unset: the input's destination stays. |

use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Maps, Role, Settings};
use mediation_adapter_sdk::{BatchBuilder, Item, ItemWriter, Kind, json};

/// The content type of a request that sent none.
const OCTET_STREAM: &str = "application/octet-stream";
/// The media type split into one event per line.
const NDJSON: &str = "application/x-ndjson";
/// The content type of each event split from an NDJSON body.
const JSON: &str = "application/json";

/// A `forward_headers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HeaderPattern {
    /// A header name, lower-case.
    Exact(String),
    /// A lower-case prefix of header names (the entry without its trailing `*`).
    Prefix(String),
}

impl HeaderPattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => name.eq_ignore_ascii_case(exact),
            Self::Prefix(prefix) => {
                name.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
            }
        }
    }
}

/// Decodes HTTP POST bodies into events.
#[derive(Debug)]
pub struct HttpPost {
    /// The accepted media types, lower-case: `type/subtype`, `type/*` or `*/*`.
    accepted: Vec<String>,
    /// The request headers copied into every event.
    forward: Vec<HeaderPattern>,
    /// The query parameter that names the destination, when configured.
    destination_param: Option<String>,
}

impl Adapter for HttpPost {
    const ROLE: Role = Role::Entrypoint;
    const MAPS: Maps = Maps::Upstream;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&["content_types", "forward_headers", "destination_param"])?;
        let accepted = settings
            .list("content_types", "application/json,application/x-ndjson,text/plain,application/octet-stream")
            .iter()
            .map(|entry| {
                let media_type = json::essence(entry).to_ascii_lowercase();
                match media_type.split_once('/') {
                    Some((kind, sub)) if !kind.is_empty() && !sub.is_empty() && (kind != "*" || sub == "*") => {
                        Ok(media_type)
                    }
                    _ => Err(format!(
                        "setting `content_types`: `{entry}` is not a media type (expected type/subtype, type/* or */*)"
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if accepted.is_empty() {
            return Err(String::from("setting `content_types`: must name at least one media type"));
        }
        let forward = settings
            .list("forward_headers", "traceparent,tracestate")
            .iter()
            .map(|entry| {
                let name = entry.to_ascii_lowercase();
                match name.strip_suffix('*') {
                    Some(prefix) => HeaderPattern::Prefix(prefix.to_owned()),
                    None => HeaderPattern::Exact(name),
                }
            })
            .collect();
        let destination_param = settings.get("destination_param").map(str::trim).map(String::from);
        if destination_param.as_deref() == Some("") {
            return Err(String::from("setting `destination_param`: must not be empty"));
        }
        Ok(Self { accepted, forward, destination_param })
    }

    fn upstream(&self, ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        let content_type = item.content_type().unwrap_or(OCTET_STREAM);
        let media_type = json::essence(content_type);
        if !self.accepts(media_type) {
            let assumed = if item.content_type().is_none() { " (assumed for a request without one)" } else { "" };
            return Err(ItemError::unsupported(format!(
                "content type `{content_type}`{assumed} is not accepted (accepted: {})",
                self.accepted.join(", ")
            )));
        }
        let request =
            Request { item: *item, destination: self.destination(ctx, item)?, forwarded: self.forwarded(ctx) };
        let body = item.payload();
        if media_type.eq_ignore_ascii_case(NDJSON) {
            return request.split_lines(out);
        }
        if json::is_json(media_type) {
            json::validate(body).map_err(|err| ItemError::malformed(format!("body is not valid JSON: {err}")))?;
        } else if json::is_textual(media_type) {
            json::utf8(body).map_err(|err| ItemError::malformed(format!("body is not UTF-8 text: {err}")))?;
        }
        request.event(out, item.id(), content_type, !json::is_textual(media_type)).payload(body);
        Ok(())
    }
}

impl HttpPost {
    fn accepts(&self, media_type: &str) -> bool {
        let kind = media_type.split_once('/').map_or(media_type, |(kind, _)| kind);
        self.accepted.iter().any(|entry| match entry.split_once('/') {
            Some(("*", "*")) => true,
            Some((entry_kind, "*")) => kind.eq_ignore_ascii_case(entry_kind),
            _ => media_type.eq_ignore_ascii_case(entry),
        })
    }

    /// The destination the request names through `destination_param`, else the input's.
    fn destination<'a>(&self, ctx: &Context<'a>, item: &Item<'a>) -> Result<Option<&'a str>, ItemError> {
        let Some(param) = &self.destination_param else {
            return Ok(item.destination());
        };
        match ctx.query(param) {
            None => Ok(item.destination()),
            Some("") => {
                Err(ItemError::malformed(format!("query parameter `{param}` is empty; it names the destination")))
            }
            Some(destination) => Ok(Some(destination)),
        }
    }

    /// The request headers `forward_headers` selects, names lower-cased, in request order.
    fn forwarded<'a>(&self, ctx: &Context<'a>) -> Vec<(String, &'a str)> {
        let Some(session) = ctx.session() else {
            return Vec::new();
        };
        session
            .headers
            .iter()
            .filter(|(name, _)| self.forward.iter().any(|pattern| pattern.matches(name)))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str()))
            .collect()
    }
}

/// What every event decoded from one request body shares.
struct Request<'a> {
    /// The input item: the body and its metadata.
    item: Item<'a>,
    /// The destination of every event.
    destination: Option<&'a str>,
    /// The request headers added to every event.
    forwarded: Vec<(String, &'a str)>,
}

impl Request<'_> {
    /// Starts one event with the input's metadata; the caller sets the payload.
    fn event<'b>(
        &self,
        out: &'b mut BatchBuilder,
        id: Option<&str>,
        content_type: &str,
        binary: bool,
    ) -> ItemWriter<'b> {
        let item = &self.item;
        let mut event = out.item(Kind::Data);
        event.flags(item.flags()).binary(binary).sequence(item.sequence()).content_type(content_type);
        if let Some(id) = id {
            event.id(id);
        }
        if let Some(client_id) = item.client_id() {
            event.client_id(client_id);
        }
        if let Some(destination) = self.destination {
            event.destination(destination);
        }
        if let Some(key) = item.key() {
            event.key(key);
        }
        for (name, value) in item.headers() {
            event.header(name, value);
        }
        for (name, value) in &self.forwarded {
            event.header(name, value.as_bytes());
        }
        event
    }

    /// One event per non-blank line of an NDJSON body. Events are written as lines
    /// validate; a later invalid line fails the item, and the SDK then rolls back
    /// every event written for it.
    fn split_lines(&self, out: &mut BatchBuilder) -> Result<(), ItemError> {
        let mut events = 0;
        for (line, number) in self.item.payload().split(|&byte| byte == b'\n').zip(1_usize..) {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            json::validate(line).map_err(|err| ItemError::malformed(format!("line {number}: {err}")))?;
            let id = self.item.id().map(|id| format!("{id}:{number}"));
            self.event(out, id.as_deref(), JSON, false).payload(line);
            events += 1;
        }
        if events == 0 {
            return Err(ItemError::malformed("body holds no JSON lines"));
        }
        Ok(())
    }
}

mediation_adapter_sdk::export_adapter!(HttpPost);

#[cfg(test)]
mod tests {
    use super::*;
    use mediation_adapter_sdk::guest::testing::{self, Output};
    use mediation_adapter_sdk::guest::{CallContext, Direction, ErrorKind, Session};

    fn adapter(settings: &[(&str, &str)]) -> Result<HttpPost, String> {
        testing::configure(settings)
    }

    fn defaults() -> HttpPost {
        adapter(&[]).expect("defaults")
    }

    /// A session whose request carried `headers` and `query`.
    fn session(headers: &[(&str, &str)], query: &[(&str, &str)]) -> CallContext {
        let pairs = |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        CallContext {
            route: 3,
            session: Some(Session {
                client_id: String::from("client-1"),
                path: String::from("/publish"),
                query: pairs(query),
                headers: pairs(headers),
            }),
        }
    }

    fn no_session() -> CallContext {
        CallContext { route: 0, session: None }
    }

    /// Posts one body per `(content type, body)` with the defaults and no session.
    fn post(adapter: &HttpPost, bodies: &[(Option<&str>, &[u8])]) -> Output {
        let mut input = BatchBuilder::default();
        for (content_type, body) in bodies {
            let mut item = input.item(Kind::Data);
            item.destination("in").payload(body);
            if let Some(content_type) = content_type {
                item.content_type(content_type);
            }
        }
        Output::map(adapter, Direction::Upstream, input)
    }

    #[test]
    fn json_body_becomes_one_event_with_forwarded_headers() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .sequence(77)
            .id("idem-1")
            .client_id("client-1")
            .destination("orders")
            .key(b"k")
            .content_type("application/json; charset=utf-8")
            .header("correlation-id", b"corr")
            .ack_requested()
            .payload(b"{\"order\": 1}\n");
        let ctx = session(
            &[("TraceParent", "00-trace-01"), ("authorization", "Bearer secret"), ("tracestate", "vendor=1")],
            &[("topic", "ignored")],
        );
        let output = Output::map_in(&defaults(), Direction::Upstream, &ctx, input);
        assert_eq!(output.produced, vec![1]);
        assert_eq!(output.errors, vec![]);
        let out = output.batch();
        let event = out.get(0);
        assert_eq!(event.kind(), Kind::Data);
        assert_eq!(event.payload(), b"{\"order\": 1}\n");
        assert_eq!(event.content_type(), Some("application/json; charset=utf-8"));
        assert!(!event.is_binary());
        assert!(event.ack_requested());
        assert_eq!(event.sequence(), 77);
        assert_eq!(event.id(), Some("idem-1"));
        assert_eq!(event.client_id(), Some("client-1"));
        assert_eq!(event.destination(), Some("orders"));
        assert_eq!(event.key(), Some(&b"k"[..]));
        assert_eq!(
            event.headers().collect::<Vec<_>>(),
            vec![
                ("correlation-id", &b"corr"[..]),
                ("traceparent", &b"00-trace-01"[..]),
                ("tracestate", &b"vendor=1"[..]),
            ]
        );
    }

    #[test]
    fn invalid_json_is_malformed_with_its_position() {
        let output = post(
            &defaults(),
            &[
                (Some("application/json"), b"{\"a\": }"),
                (Some("application/json"), b""),
                (Some("application/json"), b"{\"a\":1}\n{\"b\":2}"),
                (Some("application/json"), b"[1,2]"),
            ],
        );
        assert_eq!(output.produced, vec![0, 0, 0, 1]);
        assert_eq!(
            output.errors,
            vec![
                (0, ErrorKind::Malformed, String::from("body is not valid JSON: expected value at line 1 column 7")),
                (
                    1,
                    ErrorKind::Malformed,
                    String::from("body is not valid JSON: EOF while parsing a value at line 1 column 0")
                ),
                (
                    2,
                    ErrorKind::Malformed,
                    String::from("body is not valid JSON: trailing characters at line 2 column 1")
                ),
            ]
        );
        assert_eq!(output.batch().get(0).payload(), b"[1,2]");
    }

    #[test]
    fn ndjson_splits_into_one_event_per_line() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .sequence(9)
            .id("batch-7")
            .destination("metrics")
            .content_type("application/x-ndjson")
            .payload(b"{\"a\":1}\r\n\n   \r\n  {\"b\": [2]}  \n\"three\"\n");
        let ctx = session(&[("traceparent", "tp")], &[]);
        let output = Output::map_in(&defaults(), Direction::Upstream, &ctx, input);
        assert_eq!(output.produced, vec![3]);
        assert_eq!(output.errors, vec![]);
        let out = output.batch();
        let events: Vec<_> = out
            .iter()
            .map(|e| (e.id(), e.payload(), e.content_type(), e.is_binary(), e.destination(), e.sequence()))
            .collect();
        assert_eq!(
            events,
            vec![
                (Some("batch-7:1"), &b"{\"a\":1}"[..], Some("application/json"), false, Some("metrics"), 9),
                (Some("batch-7:4"), &b"{\"b\": [2]}"[..], Some("application/json"), false, Some("metrics"), 9),
                (Some("batch-7:5"), &b"\"three\""[..], Some("application/json"), false, Some("metrics"), 9),
            ]
        );
        for event in out.iter() {
            assert_eq!(event.headers().collect::<Vec<_>>(), vec![("traceparent", &b"tp"[..])]);
        }
    }

    #[test]
    fn ndjson_without_id_gives_events_without_ids() {
        let output = post(&defaults(), &[(Some("application/x-ndjson; charset=utf-8"), b"1\n2")]);
        assert_eq!(output.produced, vec![2]);
        let out = output.batch();
        assert_eq!(out.get(0).id(), None);
        assert_eq!(out.get(0).payload(), b"1");
        assert_eq!(out.get(1).id(), None);
        assert_eq!(out.get(1).payload(), b"2");
    }

    #[test]
    fn one_invalid_ndjson_line_fails_the_whole_body() {
        let output = post(
            &defaults(),
            &[
                (Some("application/x-ndjson"), b"{\"ok\":1}\n{\"ok\":2}\n{\"ok\": }\n{\"ok\":4}"),
                (Some("application/x-ndjson"), b"\n \r\n"),
                (Some("application/x-ndjson"), b"{\"after\":true}"),
            ],
        );
        assert_eq!(output.produced, vec![0, 0, 1]);
        assert_eq!(
            output.errors,
            vec![
                (0, ErrorKind::Malformed, String::from("line 3: expected value at line 1 column 8")),
                (1, ErrorKind::Malformed, String::from("body holds no JSON lines")),
            ]
        );
        let out = output.batch();
        assert_eq!(out.len(), 1, "the events of the failed body are rolled back");
        assert_eq!(out.get(0).payload(), b"{\"after\":true}");
    }

    #[test]
    fn text_must_be_utf8_and_other_types_pass_as_binary() {
        let output = post(
            &defaults(),
            &[
                (Some("text/plain; charset=utf-8"), "grüße\n".as_bytes()),
                (Some("text/plain"), b"caf\xe9"),
                (Some("application/octet-stream"), &[0, 1, 0xff]),
                (None, b"no content type"),
            ],
        );
        assert_eq!(output.produced, vec![1, 0, 1, 1]);
        assert_eq!(
            output.errors,
            vec![(1, ErrorKind::Malformed, String::from("body is not UTF-8 text: invalid UTF-8 at byte 3"))]
        );
        let out = output.batch();
        let events: Vec<_> =
            out.iter().map(|e| (e.payload(), e.content_type(), e.is_binary(), e.destination())).collect();
        assert_eq!(
            events,
            vec![
                ("grüße\n".as_bytes(), Some("text/plain; charset=utf-8"), false, Some("in")),
                (&[0, 1, 0xff][..], Some("application/octet-stream"), true, Some("in")),
                (&b"no content type"[..], Some("application/octet-stream"), true, Some("in")),
            ]
        );
    }

    #[test]
    fn refused_content_types_are_unsupported_and_named() {
        let only_json = adapter(&[("content_types", "application/json")]).expect("valid setting");
        let output = post(&only_json, &[(Some("Text/CSV; charset=utf-8"), b"a,b"), (None, b"x")]);
        assert_eq!(output.produced, vec![0, 0]);
        assert_eq!(
            output.errors,
            vec![
                (
                    0,
                    ErrorKind::Unsupported,
                    String::from("content type `Text/CSV; charset=utf-8` is not accepted (accepted: application/json)")
                ),
                (
                    1,
                    ErrorKind::Unsupported,
                    String::from(
                        "content type `application/octet-stream` (assumed for a request without one) \
                         is not accepted (accepted: application/json)"
                    )
                ),
            ]
        );
    }

    #[test]
    fn wildcards_accept_families_or_anything() {
        let family = adapter(&[("content_types", "TEXT/*; q=1, image/png")]).expect("valid setting");
        let output = post(
            &family,
            &[
                (Some("text/csv"), b"a,b"),
                (Some("image/png"), b"\x89PNG"),
                (Some("application/json"), b"{}"),
                (Some("textual/x"), b"no"),
            ],
        );
        assert_eq!(output.produced, vec![1, 1, 0, 0]);
        assert_eq!(
            output.errors.iter().map(|(i, kind, _)| (*i, *kind)).collect::<Vec<_>>(),
            vec![(2, ErrorKind::Unsupported), (3, ErrorKind::Unsupported)]
        );
        assert_eq!(output.errors[0].2, "content type `application/json` is not accepted (accepted: text/*, image/png)");
        let out = output.batch();
        assert!(!out.get(0).is_binary());
        assert!(out.get(1).is_binary());

        let anything = adapter(&[("content_types", "*/*")]).expect("valid setting");
        let output = post(
            &anything,
            &[
                (Some("application/cloudevents+json"), b"{\"id\":1"),
                (Some("application/xml"), b"<a>\xff</a>"),
                (Some("video/mp4"), b"\x00\x01"),
                (Some("application/xml"), b"<a/>"),
            ],
        );
        assert_eq!(output.produced, vec![0, 0, 1, 1]);
        assert_eq!(
            output.errors,
            vec![
                (
                    0,
                    ErrorKind::Malformed,
                    String::from("body is not valid JSON: EOF while parsing an object at line 1 column 7")
                ),
                (1, ErrorKind::Malformed, String::from("body is not UTF-8 text: invalid UTF-8 at byte 3")),
            ]
        );
        let out = output.batch();
        assert!(out.get(0).is_binary());
        assert_eq!(out.get(0).content_type(), Some("video/mp4"));
        assert!(!out.get(1).is_binary());
    }

    #[test]
    fn forward_headers_matches_names_and_prefixes() {
        let forwarding = adapter(&[("forward_headers", "X-Tenant-*, x-request-id")]).expect("valid setting");
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).content_type("text/plain").payload(b"hi");
        let ctx = session(
            &[
                ("x-tenant-id", "t1"),
                ("X-Request-ID", "r1"),
                ("traceparent", "not forwarded any more"),
                ("X-TENANT-REGION", "eu"),
                ("x-tenant", "no dash, no match"),
            ],
            &[],
        );
        let output = Output::map_in(&forwarding, Direction::Upstream, &ctx, input);
        assert_eq!(
            output.batch().get(0).headers().collect::<Vec<_>>(),
            vec![("x-tenant-id", &b"t1"[..]), ("x-request-id", &b"r1"[..]), ("x-tenant-region", &b"eu"[..]),]
        );

        let nothing = adapter(&[("forward_headers", "")]).expect("valid setting");
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).content_type("text/plain").payload(b"hi");
        let output = Output::map_in(&nothing, Direction::Upstream, &ctx, input);
        assert_eq!(output.batch().get(0).headers().len(), 0);
    }

    #[test]
    fn destination_param_names_the_destination() {
        let by_query = adapter(&[("destination_param", "topic")]).expect("valid setting");
        let body = |input: &mut BatchBuilder| {
            input.item(Kind::Data).destination("default").content_type("text/plain").payload(b"x");
        };
        let cases = [
            (session(&[], &[("topic", "orders/eu")]), Ok(Some("orders/eu"))),
            (session(&[], &[("other", "x")]), Ok(Some("default"))),
            (no_session(), Ok(Some("default"))),
            (session(&[], &[("topic", "")]), Err("query parameter `topic` is empty; it names the destination")),
        ];
        for (ctx, expected) in cases {
            let mut input = BatchBuilder::default();
            body(&mut input);
            let output = Output::map_in(&by_query, Direction::Upstream, &ctx, input);
            match expected {
                Ok(destination) => {
                    assert_eq!(output.errors, vec![]);
                    assert_eq!(output.batch().get(0).destination(), destination);
                }
                Err(message) => {
                    assert_eq!(output.errors, vec![(0, ErrorKind::Malformed, message.to_string())]);
                }
            }
        }

        let mut input = BatchBuilder::default();
        body(&mut input);
        let output = Output::map_in(&defaults(), Direction::Upstream, &session(&[], &[("topic", "x")]), input);
        assert_eq!(output.batch().get(0).destination(), Some("default"));
    }

    #[test]
    fn downstream_is_unsupported() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"{}");
        let output = Output::map(&defaults(), Direction::Downstream, input);
        assert_eq!(output.produced, vec![0]);
        assert_eq!(
            output.errors,
            vec![(0, ErrorKind::Unsupported, String::from("this adapter does not map downstream"))]
        );
    }

    #[test]
    fn refuses_unknown_and_invalid_settings() {
        assert_eq!(
            adapter(&[("content_type", "text/plain")]).expect_err("unknown"),
            "unknown setting `content_type` (known: content_types, forward_headers, destination_param)"
        );
        for bad in ["json", "*/json", "text/", "/plain"] {
            assert_eq!(
                adapter(&[("content_types", bad)]).expect_err("not a media type"),
                format!("setting `content_types`: `{bad}` is not a media type (expected type/subtype, type/* or */*)")
            );
        }
        assert_eq!(
            adapter(&[("content_types", " , ")]).expect_err("empty"),
            "setting `content_types`: must name at least one media type"
        );
        assert_eq!(
            adapter(&[("destination_param", " ")]).expect_err("empty"),
            "setting `destination_param`: must not be empty"
        );
    }
}
