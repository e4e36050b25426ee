//! The HTTP/1.1 server loop shared by the admin listener and the entrypoints: accept,
//! bound the connections, time out slow headers, and close gracefully on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Every response body the host writes.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A boxed request handler. Boxing costs one allocation per request, next to the
/// several hyper makes anyway.
pub type Handler =
    Arc<dyn Fn(Request<Incoming>, SocketAddr) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

/// A body of fixed bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A response with `status`, a content type and a body.
#[must_use]
pub fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}

/// A JSON error body `{"error": ..., "message": ...}` with `status`.
#[must_use]
pub fn json_error(status: StatusCode, error: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": error, "message": message }).to_string();
    respond(status, "application/json", body)
}

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; further ones wait in the accept queue.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (slowloris protection).
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_connections: 1024, header_read_timeout: Duration::from_secs(10) }
    }
}

/// Binds `addr`.
///
/// # Errors
/// When the address is taken or not permitted.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `listener` with `handler` on a task in `tasks` until `shutdown`, then
/// closes every connection gracefully: in-flight requests finish, idle keep-alive
/// connections close.
pub fn spawn(
    listener: TcpListener,
    handler: Handler,
    limits: Limits,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(async move {
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let mut connections = JoinSet::new();
        loop {
            // We never close the semaphore, so acquiring can only wait, never fail.
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let handler = Arc::clone(&handler);
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let _permit = permit;
                let service = service_fn(move |request| {
                    let response = handler(request, peer);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    }
                    () = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
            // Reap finished connections so the set does not grow without bound.
            while connections.try_join_next().is_some() {}
        }
        while connections.join_next().await.is_some() {}
    });
}

/// A response body fed by a channel: a connection's writer task sends frames, hyper
/// writes them as they come. Dropping the sender ends the body.
#[derive(Debug)]
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(|bytes| Ok(hyper::body::Frame::data(bytes))))
    }
}
