//! Where load goes: a URL that must name `127.0.0.1`. The load generator refuses
//! every other host, so a typo cannot point a benchmark at someone else's server.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use hyper::Uri;

/// The URL schemes the modes speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP/1.1 (ingest, SSE, the admin listener).
    Http,
    /// WebSocket without TLS.
    Ws,
}

/// A loopback URL, checked once at startup.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` or `ws`.
    pub scheme: Scheme,
    /// Always `127.0.0.1:port`.
    pub addr: SocketAddr,
    /// The path with its query, `/` when the URL has none.
    pub path_and_query: String,
}

impl Target {
    /// Parses `url` and checks that it is `scheme://127.0.0.1[:port]/...`.
    ///
    /// # Errors
    /// A message naming what is wrong with the URL.
    pub fn parse(url: &str, scheme: Scheme) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let (expected, default_port) = match scheme {
            Scheme::Http => ("http", 80),
            Scheme::Ws => ("ws", 80),
        };
        if uri.scheme_str() != Some(expected) {
            return Err(format!("`{url}` must start with {expected}://"));
        }
        if uri.host() != Some("127.0.0.1") {
            return Err(format!("`{url}`: the load generator only sends to 127.0.0.1"));
        }
        let port = uri.port_u16().unwrap_or(default_port);
        let path_and_query = uri.path_and_query().map_or_else(|| String::from("/"), |p| p.as_str().to_owned());
        Ok(Self { scheme, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)), path_and_query })
    }

    /// The `Host` header value.
    #[must_use]
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Ws => "ws",
        };
        write!(f, "{scheme}://{}{}", self.addr, self.path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_loopback_with_the_right_scheme() {
        let t = Target::parse("http://127.0.0.1:18480/ingest?x=1", Scheme::Http).expect("a loopback URL");
        assert_eq!(t.addr, SocketAddr::from(([127, 0, 0, 1], 18480)));
        assert_eq!(t.path_and_query, "/ingest?x=1");
        assert_eq!(t.to_string(), "http://127.0.0.1:18480/ingest?x=1");
        assert_eq!(Target::parse("ws://127.0.0.1:9/ws", Scheme::Ws).map(|t| t.path_and_query), Ok("/ws".into()));
        assert_eq!(Target::parse("http://127.0.0.1", Scheme::Http).map(|t| t.addr.port()), Ok(80));
        for bad in ["http://localhost:1/x", "http://10.0.0.1:1/x", "http://[::1]:1/x", "ws://127.0.0.1:1/x", "nope"] {
            assert!(Target::parse(bad, Scheme::Http).is_err(), "{bad} must be refused");
        }
    }
}
