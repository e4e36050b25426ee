//! A keep-alive HTTP/1.1 client connection, and readings of the host's `/metrics`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Error;
use crate::target::Target;

/// How long one request may take before the load generator gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One open connection; requests go one after another over it.
#[derive(Debug)]
pub struct Connection {
    /// hyper's handle for sending; the connection itself runs on its own task.
    sender: SendRequest<Full<Bytes>>,
    /// The `Host` header.
    authority: String,
}

impl Connection {
    /// Connects to `target` and performs the HTTP/1.1 handshake.
    ///
    /// # Errors
    /// When the TCP connection is refused or the handshake fails.
    pub async fn open(target: &Target) -> Result<Self, Error> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender, authority: target.authority() })
    }

    /// Sends one request and reads the whole answer.
    ///
    /// # Errors
    /// When the connection fails or the answer does not come within [`REQUEST_TIMEOUT`].
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), Error> {
        let mut request = Request::builder().method(method).uri(path).header(HOST, &self.authority);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let request = request.body(Full::new(body))?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Error>((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| "no answer within 10 s")?
    }
}

/// What `/metrics` said at one moment.
#[derive(Debug, Clone)]
pub struct Metrics(String);

impl Metrics {
    /// Reads `/metrics` from the admin listener `admin`.
    ///
    /// # Errors
    /// When the admin listener cannot be reached or does not answer 200.
    pub async fn read(admin: &Target) -> Result<Self, Error> {
        let stream = TcpStream::connect(admin.addr).await?;
        let (mut sender, connection) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::builder().uri("/metrics").header(HOST, admin.authority()).body(Empty::<Bytes>::new())?;
        let exchange = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| "/metrics did not answer within 10 s")??;
        if status != StatusCode::OK {
            return Err(format!("/metrics answered {status}").into());
        }
        Ok(Self(String::from_utf8_lossy(&body).into_owned()))
    }

    /// The value of the sample `series`, exactly as written before the value
    /// (`process_resident_memory_bytes`, `mediation_connections{component="ws"}`).
    #[must_use]
    pub fn value(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The sum of every sample of the family `name`, whatever its labels.
    #[must_use]
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.trim().parse::<f64>().ok()
            })
            .sum()
    }

    /// The host's resident memory in bytes.
    ///
    /// # Errors
    /// When the host does not report it.
    pub fn resident_bytes(&self) -> Result<u64, Error> {
        let rss = self.value("process_resident_memory_bytes").ok_or("/metrics has no process_resident_memory_bytes")?;
        // A gauge of bytes is a whole number; the cast only drops a `.0`.
        Ok(rss as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_and_sums_families() {
        let m = Metrics(String::from(
            "# HELP mediation_connections Open client connections.\n# TYPE mediation_connections gauge\n\
             mediation_connections{component=\"ws\"} 12\nmediation_connections{component=\"events\"} 3\n\
             mediation_connections_other 5\nprocess_resident_memory_bytes 1048576\n",
        ));
        assert_eq!(m.value("mediation_connections{component=\"ws\"}"), Some(12.0));
        assert_eq!(m.value("mediation_connections{component=\"poll\"}"), None);
        assert_eq!(m.sum("mediation_connections"), 15.0, "another family with the same prefix does not count");
        assert_eq!(m.resident_bytes().ok(), Some(1_048_576));
    }
}
