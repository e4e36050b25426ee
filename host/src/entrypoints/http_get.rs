//! The `http_get` entrypoint: polling with a cursor.
//!
//! `GET path?cursor=&limit=&wait_ms=` answers the events after `cursor`, at most
//! `limit`, and the cursor to ask with next. With `wait_ms` the request long-polls:
//! it answers as soon as an event arrives, or empty when the time runs out. A cursor
//! older than the ring gets 410 with the oldest cursor still available: a gap is
//! never hidden.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::hub::Read;
use super::request::{filter_from_query, session};
use super::{Entrypoint, EntrypointKind};
use crate::adapter::Directions;
use crate::config::Problems;
use crate::server::{Body, Handler, json_error, respond};

/// `type = "http_get"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGetConfig {
    /// Events per answer when the client gives no `limit`.
    #[serde(default = "default_limit")]
    pub default_limit: usize,
    /// The largest `limit` a client may ask for.
    #[serde(default = "default_max_limit")]
    pub max_limit: usize,
    /// The longest `wait_ms` a client may ask for.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

const fn default_limit() -> usize {
    100
}

const fn default_max_limit() -> usize {
    1000
}

const fn default_max_wait_ms() -> u64 {
    30_000
}

impl EntrypointKind for HttpGetConfig {
    fn type_name(&self) -> &'static str {
        "http_get"
    }

    fn builtin_adapter(&self) -> &'static str {
        "http-get"
    }

    fn needs(&self) -> (Directions, &'static str) {
        (Directions::DOWNSTREAM, "encode events (downstream)")
    }

    fn method(&self) -> &'static str {
        "GET"
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(
            (1..=self.max_limit).contains(&self.default_limit),
            format!("{path}.default_limit"),
            format!("must be between 1 and max_limit ({})", self.max_limit),
        );
    }

    fn handler(&self, entrypoint: Entrypoint) -> Handler {
        handler(entrypoint, self)
    }
}

/// How the answer is written, from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `{"events": [...], "next_cursor": N}`.
    Json,
    /// One encoded event per line.
    Ndjson,
    /// One raw payload per line.
    Text,
}

fn negotiate(accept: Option<&HeaderValue>) -> Option<Format> {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else { return Some(Format::Json) };
    accept.split(',').map(|part| part.split(';').next().unwrap_or_default().trim()).find_map(|media| match media {
        "application/json" | "application/*" | "*/*" => Some(Format::Json),
        "application/x-ndjson" => Some(Format::Ndjson),
        "text/plain" | "text/*" => Some(Format::Text),
        _ => None,
    })
}

/// Builds the request handler.
#[must_use]
pub fn handler(entrypoint: Entrypoint, config: &HttpGetConfig) -> Handler {
    let config = Arc::new(config.clone());
    Arc::new(move |request, peer| {
        let (entrypoint, config) = (entrypoint.clone(), Arc::clone(&config));
        Box::pin(async move { poll(&entrypoint, &config, request, peer).await })
    })
}

/// The query of one poll, checked.
struct Query {
    cursor: u64,
    limit: usize,
    wait: Duration,
}

fn parse(query: &[(String, String)], config: &HttpGetConfig) -> Result<Query, String> {
    let number = |name: &str| -> Result<Option<u64>, String> {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.parse::<u64>().map_err(|_| format!("`{name}` must be a whole number, not `{v}`")))
            .transpose()
    };
    let cursor = number("cursor")?.unwrap_or(0);
    let limit = number("limit")?.map_or(config.default_limit, |l| usize::try_from(l).unwrap_or(usize::MAX));
    if !(1..=config.max_limit).contains(&limit) {
        return Err(format!("`limit` must be between 1 and {}", config.max_limit));
    }
    let wait_ms = number("wait_ms")?.unwrap_or(0);
    if wait_ms > config.max_wait_ms {
        return Err(format!("`wait_ms` must be at most {}", config.max_wait_ms));
    }
    Ok(Query { cursor, limit, wait: Duration::from_millis(wait_ms) })
}

async fn poll(
    entrypoint: &Entrypoint,
    config: &HttpGetConfig,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    if request.method() != Method::GET {
        let mut response = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    let Some(format) = negotiate(request.headers().get(header::ACCEPT)) else {
        let message = "answers are application/json (default), application/x-ndjson or text/plain";
        return json_error(StatusCode::NOT_ACCEPTABLE, "not_acceptable", message);
    };
    let (parts, _) = request.into_parts();
    let checked = session(&parts.headers, &parts.uri, peer).and_then(|session| {
        let query = parse(&session.query, config)?;
        let filter = filter_from_query(&session.query, &session.client_id)?;
        Ok((query, filter))
    });
    let (query, filter) = match checked {
        Ok(checked) => checked,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, "bad_query", &message),
    };
    let _slot = match entrypoint.slot() {
        Ok(slot) => slot,
        Err(response) => return *response,
    };
    let hub = entrypoint.hub();
    let deadline = tokio::time::Instant::now() + query.wait;
    let mut head = hub.watch();
    let mut entries = Vec::new();
    let mut cursor = query.cursor;
    loop {
        head.borrow_and_update();
        match hub.read(cursor, &filter, query.limit, &mut entries) {
            Read::Expired { oldest, missed } => {
                let body = serde_json::json!({
                    "error": "cursor_expired",
                    "message": match missed {
                        None => format!("cursor {cursor} was not issued by this replay window (another run or replica)"),
                        Some(missed) => format!("cursor {cursor} is older than the replay window: {missed} events are gone"),
                    },
                    "oldest_cursor": oldest,
                    "missed": missed,
                });
                return respond(StatusCode::GONE, "application/json", body.to_string());
            }
            Read::Ok { next } => cursor = next,
        }
        if !entries.is_empty() {
            break;
        }
        let woke = tokio::select! {
            changed = head.changed() => changed.is_ok(),
            () = tokio::time::sleep_until(deadline) => false,
            () = entrypoint.ctx.shutdown.accept.cancelled() => false,
        };
        if !woke {
            break;
        }
    }
    let mut body = BytesMut::new();
    match format {
        Format::Json => {
            body.put_slice(b"{\"events\":[");
            for (i, entry) in entries.iter().enumerate() {
                if i > 0 {
                    body.put_u8(b',');
                }
                body.put_slice(&entry.frame);
            }
            body.put_slice(format!("],\"next_cursor\":{cursor}}}").as_bytes());
        }
        Format::Ndjson | Format::Text => {
            for entry in &entries {
                body.put_slice(if format == Format::Ndjson { &entry.frame } else { &entry.payload });
                body.put_u8(b'\n');
            }
        }
    }
    let content_type = match format {
        Format::Json => "application/json",
        Format::Ndjson => "application/x-ndjson",
        Format::Text => "text/plain; charset=utf-8",
    };
    let mut response = respond(StatusCode::OK, content_type, Bytes::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(next) = HeaderValue::from_str(&cursor.to_string()) {
        headers.insert("x-next-cursor", next);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_from_accept() {
        let accept = |s: &'static str| negotiate(Some(&HeaderValue::from_static(s)));
        assert_eq!(negotiate(None), Some(Format::Json));
        assert_eq!(accept("application/x-ndjson"), Some(Format::Ndjson));
        assert_eq!(accept("text/html, text/plain;q=0.5"), Some(Format::Text));
        assert_eq!(accept("*/*"), Some(Format::Json));
        assert_eq!(accept("image/png"), None);
    }

    #[test]
    fn checks_the_query() {
        let config = HttpGetConfig { default_limit: 100, max_limit: 1000, max_wait_ms: 30_000 };
        let q = |s: &str| parse(&super::super::request::parse_query(s).expect("a query"), &config);
        let ok = q("cursor=5&limit=10&wait_ms=200").expect("valid");
        assert_eq!((ok.cursor, ok.limit, ok.wait), (5, 10, Duration::from_millis(200)));
        assert_eq!(q("cursor=abc").err().as_deref(), Some("`cursor` must be a whole number, not `abc`"));
        assert_eq!(q("limit=0").err().as_deref(), Some("`limit` must be between 1 and 1000"));
        assert_eq!(q("wait_ms=60000").err().as_deref(), Some("`wait_ms` must be at most 30000"));
    }
}
