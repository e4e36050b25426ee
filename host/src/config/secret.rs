//! A configuration value that must never be printed.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A password, token or credential-bearing URL. `Debug` and `Display` print
/// `[redacted]`, so a logged or printed configuration never leaks it; only
/// [`Secret::expose`] gives the value, at the one place that hands it to a client
/// library.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the client library that needs it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

/// A URL with its password replaced by `[redacted]`, for logs and errors:
/// `amqp://user:[redacted]@host:5672/vhost`.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..].find(['/', '?', '#']).map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    format!("{}{user}:[redacted]{}", &url[..scheme_end], &url[scheme_end + at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)] // Only Debug reads the field: that is what is under test.
        struct Login {
            password: Secret,
        }
        let login: Login = toml::from_str("password = \"hunter2\"").expect("valid");
        assert_eq!(format!("{login:?}"), "Login { password: [redacted] }");
        assert_eq!(login.password.to_string(), "[redacted]");
        assert_eq!(login.password.expose(), "hunter2");
    }

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:[redacted]@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("mqtt://user@host:1883"), "mqtt://user:[redacted]@host:1883");
        assert_eq!(redact_url("kafka://host:9092/a@b"), "kafka://host:9092/a@b");
        assert_eq!(redact_url("host:9092"), "host:9092");
    }
}
