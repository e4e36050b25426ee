//! The HTTP POST adapter's NDJSON body splitter (`guests/http-post`), run natively the
//! way its unit tests run it. The input is one request body.
//!
//! Asserts the documented split against a model of it: one event per line that is not
//! blank, holding the line trimmed, in order, with id `<id>:<line number>`, content type
//! `application/json`, never binary; or, when a line is not JSON, a `malformed` error
//! naming the first such line and no events at all (the same for a body without any
//! JSON line). The events' lines joined again split into the same payloads.

#![no_main]

use adapter_http_post::HttpPost;
use libfuzzer_sys::fuzz_target;
use mediation_adapter_sdk::guest::testing::{self, Output};
use mediation_adapter_sdk::guest::{Direction, ErrorKind};
use mediation_adapter_sdk::{BatchBuilder, Kind};
use serde::de::IgnoredAny;

const IDEMPOTENCY_KEY: &str = "idem-1";

fuzz_target!(|body: &[u8]| {
    let adapter: HttpPost = testing::configure(&[]).expect("the defaults");
    let output = post(&adapter, body);

    let lines: Vec<(usize, &[u8])> = body
        .split(|&byte| byte == b'\n')
        .zip(1..)
        .map(|(line, number)| (number, line.trim_ascii()))
        .filter(|(_, line)| !line.is_empty())
        .collect();
    let invalid = lines.iter().find(|(_, line)| !is_json(line));
    match (invalid, lines.is_empty()) {
        (Some((number, _)), _) => {
            assert_eq!(output.produced, vec![0]);
            let [(0, ErrorKind::Malformed, message)] = &output.errors[..] else {
                panic!("expected one malformed error, got {:?}", output.errors);
            };
            assert!(message.starts_with(&format!("line {number}: ")), "{message}");
        }
        (None, true) => {
            assert_eq!(output.produced, vec![0]);
            assert_eq!(output.errors, vec![(0, ErrorKind::Malformed, String::from("body holds no JSON lines"))]);
        }
        (None, false) => {
            assert_eq!(output.produced, vec![u32::try_from(lines.len()).expect("fewer lines than bytes")]);
            let batch = output.batch();
            for (event, (number, line)) in batch.iter().zip(&lines) {
                assert_eq!(event.kind(), Kind::Data);
                assert_eq!(event.payload(), *line);
                assert_eq!(event.id(), Some(format!("{IDEMPOTENCY_KEY}:{number}").as_str()));
                assert_eq!(event.content_type(), Some("application/json"));
                assert!(!event.is_binary());
                assert_eq!((event.sequence(), event.client_id(), event.destination()), (9, Some("c1"), Some("in")));
            }
            let joined = batch.iter().map(|event| event.payload()).collect::<Vec<_>>().join(&b'\n');
            let again = post(&adapter, &joined);
            assert_eq!(again.produced, output.produced);
            assert!(again.batch().iter().map(|e| e.payload()).eq(batch.iter().map(|e| e.payload())));
        }
    }
});

/// One JSON value, whitespace around it allowed. JSON text is UTF-8, which serde_json
/// does not check inside strings it skips, so that is checked first.
fn is_json(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok())
}

/// Posts `body` as NDJSON with an idempotency key, from client `c1` to destination `in`.
fn post(adapter: &HttpPost, body: &[u8]) -> Output {
    let mut input = BatchBuilder::default();
    input
        .item(Kind::Data)
        .sequence(9)
        .id(IDEMPOTENCY_KEY)
        .client_id("c1")
        .destination("in")
        .content_type("application/x-ndjson; charset=utf-8")
        .payload(body);
    Output::map(adapter, Direction::Upstream, input)
}
