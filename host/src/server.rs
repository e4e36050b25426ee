//! The HTTP/1.1 server loop shared by the admin listener and the entrypoints: accept,
//! bound the connections, time out slow headers, and close gracefully on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most; further ones wait in the accept queue.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (slowloris protection).
    pub header_read_timeout: Duration,
    /// The largest request head; a larger one gets 431.
    pub max_header_bytes: usize,
    /// How long a write to a client may make no progress before the connection is
    /// closed ([`WriteTimeout`]).
    pub send_timeout: Duration,
    /// Connections closed for that, for `/metrics`.
    pub write_timeouts: Arc<AtomicU64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: crate::config::DEFAULT_MAX_HEADER_BYTES,
            send_timeout: Duration::from_secs(30),
            write_timeouts: Arc::default(),
        }
    }
}

/// A client connection whose writes may not stall: a write or flush that makes no
/// progress for `timeout` fails with `TimedOut`, which ends the connection (nginx's
/// `send_timeout`). It covers every response, streamed or not, and the WebSockets
/// upgraded from it, whose socket it is: a client that stops reading is cut off
/// whatever the host was writing, its events, pongs or a close frame, instead of
/// holding the connection, and the memory queued for it, for as long as it likes.
#[derive(Debug)]
pub struct WriteTimeout<S> {
    /// The socket.
    inner: S,
    /// How long a write may wait for the client.
    timeout: Duration,
    /// Running while a write is blocked; reset by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Counts the connections it closed.
    timeouts: Arc<AtomicU64>,
}

impl<S> WriteTimeout<S> {
    /// `inner` with writes bounded by `timeout`, counting timeouts in `timeouts`.
    pub fn new(inner: S, timeout: Duration, timeouts: Arc<AtomicU64>) -> Self {
        Self { inner, timeout, stalled: None, timeouts }
    }

    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        let message = format!("the client took no bytes for {} ms", timeout.as_millis());
        Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, message)))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

/// The first bytes of an HTTP/2 connection (RFC 9113 §3.4). No HTTP/1.1 method is `PRI`.
const H2_PREFACE_START: &[u8] = b"PRI ";

/// The answer to an HTTP/2 client: the server's SETTINGS (an HTTP/2 peer expects it
/// first), then GOAWAY with `HTTP_1_1_REQUIRED`, so that the client learns why instead
/// of seeing a reset.
fn h2_refusal() -> Vec<u8> {
    const DEBUG: &[u8] = b"this server speaks HTTP/1.1 only";
    // An empty SETTINGS frame: length 0, type 0x4, no flags, stream 0.
    let mut out = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    // GOAWAY: last stream 0, error HTTP_1_1_REQUIRED (0xd), then the debug text.
    let length = u32::try_from(8 + DEBUG.len()).unwrap_or(0).to_be_bytes();
    out.extend_from_slice(&[length[1], length[2], length[3], 0x7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0xd]);
    out.extend_from_slice(DEBUG);
    out
}

/// Answers an HTTP/2 prior-knowledge client with [`h2_refusal`] and closes; true when
/// the connection was one. Only looks at bytes already there: a request that arrives
/// byte by byte goes to the HTTP/1.1 parser, which refuses `PRI` on its own.
async fn refused_h2(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncWriteExt;
    let mut start = [0u8; H2_PREFACE_START.len()];
    match stream.peek(&mut start).await {
        Ok(n) if n == start.len() && start == H2_PREFACE_START => {
            let _ = stream.write_all(&h2_refusal()).await;
            let _ = stream.shutdown().await;
            true
        }
        _ => false,
    }
}

/// 400 for an HTTP/1.1 request without `Host` (RFC 9112 §3.2), which a client must
/// send and a proxy must not drop; `None` for a well-formed request.
fn missing_host<B>(request: &Request<B>) -> Option<Response<Body>> {
    (request.version() == hyper::Version::HTTP_11 && !request.headers().contains_key(hyper::header::HOST))
        .then(|| json_error(StatusCode::BAD_REQUEST, "missing_host", "an HTTP/1.1 request must carry a Host header"))
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
            let limits = limits.clone();
            connections.spawn(async move {
                let _permit = permit;
                let mut stream = stream;
                // Waiting for the first bytes is bounded like the headers are; a client
                // that sends nothing in that time is closed.
                if tokio::time::timeout(limits.header_read_timeout, refused_h2(&mut stream)).await != Ok(false) {
                    return;
                }
                let service = service_fn(move |request| {
                    let response = match missing_host(&request) {
                        Some(refused) => Box::pin(async move { refused }),
                        None => handler(request, peer),
                    };
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .max_header_size(limits.max_header_bytes)
                    .serve_connection(
                        TokioIo::new(WriteTimeout::new(stream, limits.send_timeout, limits.write_timeouts)),
                        service,
                    )
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
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(|bytes| Ok(hyper::body::Frame::data(bytes))))
    }
}
