//! What every entrypoint reads from a client's request line: the query
//! (`entrypoints::request`), the subscription filter it gives, and a cursor
//! (`Last-Event-ID`, `?cursor=`). The input is the query string.
//!
//! Asserts that parsing never panics and is exact: a query that parses, written back
//! with every byte percent-encoded, parses to the same pairs; a filter is accepted
//! only when each of its patterns passes the pattern check, and then matching any
//! topic against it never panics; a cursor is accepted exactly when it is a whole
//! number.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mediation_host::entrypoints::hub::topic_matches;
use mediation_host::entrypoints::request::{check_pattern, filter_from_query, parse_cursor, parse_query};

fuzz_target!(|query: &str| {
    if let Ok(pairs) = parse_query(query) {
        let encoded: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        assert_eq!(parse_query(&encoded.join("&")), Ok(pairs.clone()), "{query:?} round-trips");
        if let Ok(filter) = filter_from_query(&pairs, "client") {
            for pattern in &filter.topics {
                assert!(check_pattern(pattern).is_ok(), "{pattern:?} passed the check");
                let _ = topic_matches(pattern, query);
            }
        }
    }
    assert_eq!(parse_cursor("cursor", query).is_ok(), query.trim().parse::<u64>().is_ok(), "{query:?}");
});

/// Every byte as `%XX`, so that nothing in it is read as syntax.
fn encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}
