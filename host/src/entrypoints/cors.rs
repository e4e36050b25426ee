//! Browsers: the origin policy every entrypoint applies first, CORS preflights, and the
//! CORS headers on its answers.

use std::sync::Arc;

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::Entrypoint;
use crate::server::{self, Body, Handler, json_error};

/// The origin policy of one entrypoint: requests without `Origin` (not from a
/// browser) pass; a browser's request passes when it comes from the page's own origin
/// (its host equals the `Host` header) or from one of `allowed_origins`.
#[derive(Debug, Default)]
pub struct Origins {
    /// Allowed origins, exactly as browsers send them (`https://app.example.com`), or `*`.
    allowed: Vec<String>,
}

impl Origins {
    /// The policy for `allowed`.
    #[must_use]
    pub fn new(allowed: &[String]) -> Self {
        Self { allowed: allowed.to_vec() }
    }

    /// `Ok(None)` for a request without `Origin`, `Ok(Some(origin))` for an allowed
    /// browser origin (to echo in CORS answers).
    ///
    /// # Errors
    /// The origin that is not allowed.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, String> {
        let Some(origin) = headers.get(header::ORIGIN) else { return Ok(None) };
        let text = origin.to_str().unwrap_or_default();
        let same_origin = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| text.split_once("://").is_some_and(|(_, rest)| rest == host));
        if same_origin || self.allowed.iter().any(|a| a == "*" || a == text) {
            Ok(Some(origin.clone()))
        } else {
            Err(text.to_owned())
        }
    }

    /// Adds the CORS headers for an allowed browser origin to `response`.
    pub fn decorate(origin: Option<HeaderValue>, response: &mut Response<Body>) {
        if let Some(origin) = origin {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::VARY, HeaderValue::from_static("origin"));
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after"));
        }
    }

    /// The answer to a CORS preflight for an entrypoint serving `methods`.
    #[must_use]
    pub fn preflight(&self, request: &Request<hyper::body::Incoming>, methods: &'static str) -> Response<Body> {
        match self.check(request.headers()) {
            Ok(origin) => {
                let mut response = server::respond(StatusCode::NO_CONTENT, "text/plain", "");
                Self::decorate(origin, &mut response);
                let headers = response.headers_mut();
                headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
                if let Some(asked) = request.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
                }
                headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                response
            }
            Err(origin) => refuse_origin(&origin),
        }
    }
}

/// 403 for a browser origin that is not allowed.
#[must_use]
pub fn refuse_origin(origin: &str) -> Response<Body> {
    json_error(StatusCode::FORBIDDEN, "origin_not_allowed", &format!("origin `{origin}` is not in allowed_origins"))
}

/// Wraps a transport's handler with what every entrypoint does first: CORS
/// preflights, the origin check, and the CORS headers on the answer.
pub(super) fn with_origin_policy(entrypoint: &Entrypoint, methods: &'static str, handler: Handler) -> Handler {
    let origins = Arc::clone(&entrypoint.origins);
    Arc::new(move |request, peer| {
        if request.method() == Method::OPTIONS {
            let response = origins.preflight(&request, methods);
            return Box::pin(async move { response });
        }
        match origins.check(request.headers()) {
            Err(origin) => {
                let response = refuse_origin(&origin);
                Box::pin(async move { response })
            }
            Ok(origin) => {
                let answer = handler(request, peer);
                Box::pin(async move {
                    let mut response = answer.await;
                    Origins::decorate(origin, &mut response);
                    response
                })
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_pass_same_origin_and_listed_ones() {
        let origins = Origins::new(&[String::from("https://app.example.com")]);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert_eq!(origins.check(&headers(&[])), Ok(None), "no Origin: not a browser");
        assert!(origins.check(&headers(&[("origin", "http://gw:8080"), ("host", "gw:8080")])).is_ok(), "same origin");
        assert!(origins.check(&headers(&[("origin", "https://app.example.com"), ("host", "gw")])).is_ok());
        assert_eq!(
            origins.check(&headers(&[("origin", "https://evil.example"), ("host", "gw")])),
            Err(String::from("https://evil.example"))
        );
        assert!(Origins::new(&[String::from("*")]).check(&headers(&[("origin", "https://x"), ("host", "gw")])).is_ok());
    }
}
