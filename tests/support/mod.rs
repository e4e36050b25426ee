//! Helpers shared by the integration tests: a host started from TOML text, a real
//! HTTP/1.1 client, and the packet log read back as JSON.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use mediation_host::config::Config;
use mediation_host::host::Host;
use mediation_host::packet_log::Sink;

/// A running in-process host and what the test needs to observe it.
pub struct TestHost {
    pub host: Host,
    /// The packet log, as written.
    pub packets: Arc<Mutex<Vec<u8>>>,
    /// Holds the config file (and anything next to it) for the test's lifetime.
    pub dir: tempfile::TempDir,
}

/// Listeners on free ports, so tests run in parallel.
pub const PORTS: &str = "[host]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";

impl TestHost {
    /// Starts a host from `toml` (with [`PORTS`] prepended).
    pub async fn start(toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, format!("{PORTS}{toml}")).expect("config written");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("test config is valid: {e}"));
        let packets = Arc::new(Mutex::new(Vec::new()));
        let host = Host::start(config, Sink::Memory(Arc::clone(&packets))).await.expect("host starts");
        Self { host, packets, dir }
    }

    /// The config file the host was started from.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The entrypoint listener.
    pub fn listen(&self) -> SocketAddr {
        self.host.listen_addr().expect("the config has entrypoints")
    }

    /// The packet log lines so far, parsed.
    pub fn packets(&self) -> Vec<serde_json::Value> {
        let bytes = self.packets.lock().expect("not poisoned").clone();
        String::from_utf8(bytes)
            .expect("the packet log is UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("packet line is JSON ({e}): {l}")))
            .collect()
    }

    /// `GET` on the admin listener.
    pub async fn admin(&self, path: &str) -> Reply {
        request(self.host.admin_addr(), "GET", path, &[], Bytes::new()).await
    }

    /// `POST` `body` to `path` on the entrypoint listener.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        request(self.listen(), "POST", path, headers, body.into()).await
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection, with a real HTTP/1.1 client.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    let mut builder = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = sender.send_request(builder.body(Full::new(body)).expect("request")).await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    Reply { status, headers, body }
}

/// A Prometheus sample's value, or 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}
