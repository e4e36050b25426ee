//! What every entrypoint reads from a client's request: the query, the session the
//! adapter sees, the subscription filter, and where a resuming client continues.
//!
//! Query parsing is strict: a query the host cannot read exactly (a bad percent
//! escape, an empty topic, a wildcard inside a level) is refused with 400 naming the
//! problem, never half-understood into a filter that matches something else.

use std::net::SocketAddr;

use hyper::header::HeaderMap;

use super::hub::Filter;
use crate::adapter;

/// The most `topic=` patterns one request may give.
pub const MAX_TOPIC_PATTERNS: usize = 64;

/// The longest topic pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// `a=1&b=x%20y` into pairs, percent-decoded; `+` is a space.
///
/// # Errors
/// A percent sign not followed by two hex digits, or decoded bytes that are not UTF-8.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(byte) = byte else {
                    let bad: String = s[i..].chars().take(3).collect();
                    return Err(format!("`{bad}` in the query is not a percent escape (`%` and two hex digits)"));
                };
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` in the query does not decode to UTF-8"))
}

/// The client session the adapter sees: Envoy's forwarded headers, the path and the
/// query. The client id is `X-Client-Id` when Envoy sets it, else the peer address.
///
/// # Errors
/// A query that does not parse ([`parse_query`]).
pub fn session(request_headers: &HeaderMap, uri: &hyper::Uri, peer: SocketAddr) -> Result<adapter::Session, String> {
    let headers: Vec<(String, String)> = request_headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let client_id =
        headers.iter().find(|(k, _)| k == "x-client-id").map_or_else(|| peer.to_string(), |(_, v)| v.clone());
    let query = uri.query().map(parse_query).transpose()?.unwrap_or_default();
    Ok(adapter::Session { client_id, path: uri.path().to_owned(), query, headers })
}

/// A stable ordering key for a client id.
#[must_use]
pub fn ordering_key(client_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    client_id.hash(&mut h);
    h.finish()
}

/// A subscription filter from a query: every `topic` parameter is a pattern, every
/// `header.<name>=<value>` an equality.
///
/// # Errors
/// An empty or malformed pattern ([`check_pattern`]), too many of them, or an empty
/// header name.
pub fn filter_from_query(query: &[(String, String)], client_id: &str) -> Result<Filter, String> {
    let mut filter = Filter { client_id: client_id.to_owned(), ..Filter::default() };
    for (key, value) in query {
        if key == "topic" {
            check_pattern(value)?;
            filter.topics.push(value.clone());
        } else if let Some(name) = key.strip_prefix("header.") {
            if name.is_empty() {
                return Err(String::from("`header.` needs a header name: `header.<name>=<value>`"));
            }
            filter.headers.push((name.to_owned(), bytes::Bytes::from(value.clone())));
        }
    }
    if filter.topics.len() > MAX_TOPIC_PATTERNS {
        return Err(format!("{} topic patterns; at most {MAX_TOPIC_PATTERNS} are allowed", filter.topics.len()));
    }
    Ok(filter)
}

/// Checks a topic pattern: levels split on `/`, `*` stands for one whole level and
/// `#` for the remaining levels, so it may only be the last one.
///
/// # Errors
/// What is wrong with the pattern.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err(String::from("a topic pattern must not be empty"));
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "a topic pattern is {} bytes long; at most {MAX_PATTERN_BYTES} are allowed",
            pattern.len()
        ));
    }
    let levels: Vec<&str> = pattern.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!("topic pattern `{pattern}`: `#` must be a whole level, and the last one"));
        }
        if level.contains('*') && *level != "*" {
            return Err(format!("topic pattern `{pattern}`: `*` must be a whole level"));
        }
    }
    Ok(())
}

/// A cursor a client gave (`cursor`, `Last-Event-ID`): a whole number.
///
/// # Errors
/// What is wrong, naming `what`.
pub fn parse_cursor(what: &str, text: &str) -> Result<u64, String> {
    text.trim().parse::<u64>().map_err(|_| format!("{what} must be a whole number, not `{text}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries_and_refuses_bad_escapes() {
        assert_eq!(
            parse_query("topic=a%2Fb&x=1+2&flag&caf%C3%A9=1"),
            Ok(vec![
                (String::from("topic"), String::from("a/b")),
                (String::from("x"), String::from("1 2")),
                (String::from("flag"), String::new()),
                (String::from("café"), String::from("1")),
            ])
        );
        for (query, bad) in [("bad=%zz", "%zz"), ("end=%4", "%4"), ("x=%", "%"), ("x=%+1", "%+1")] {
            let error = parse_query(query).expect_err(query);
            assert!(error.contains(&format!("`{bad}`")), "{query}: {error}");
        }
        assert!(parse_query("x=%FF").expect_err("not UTF-8").contains("UTF-8"));
    }

    #[test]
    fn filters_refuse_empty_and_misplaced_parts() {
        let q = |s: &str| filter_from_query(&parse_query(s).expect("parses"), "me");
        let ok = q("topic=chat/%23&topic=a/*/b&header.lang=en").expect("valid");
        assert_eq!(ok.topics, vec![String::from("chat/#"), String::from("a/*/b")]);
        assert_eq!(ok.headers, vec![(String::from("lang"), bytes::Bytes::from_static(b"en"))]);
        for (query, expected) in [
            ("topic=", "must not be empty"),
            ("header.=x", "needs a header name"),
            ("topic=a/%23/b", "`#` must be a whole level, and the last one"),
            ("topic=a%23", "`#` must be a whole level"),
            ("topic=a*", "`*` must be a whole level"),
        ] {
            let error = q(query).expect_err(query);
            assert!(error.contains(expected), "{query}: {error}");
        }
        let many = vec!["topic=t"; MAX_TOPIC_PATTERNS + 1].join("&");
        assert!(q(&many).expect_err("too many").contains("at most 64"));
        let long = format!("topic={}", "a".repeat(MAX_PATTERN_BYTES + 1));
        assert!(q(&long).expect_err("too long").contains("at most 1024"));
    }
}
