//! Subscribers that read: a WebSocket or SSE connection that counts what arrives,
//! checks its order and records each message's publish-to-receive latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::header::{ACCEPT, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Error;
use crate::histogram::Histogram;
use crate::payload::{self, Marker};
use crate::target::{Scheme, Target};

/// The WebSocket read buffer. tungstenite's default (128 KiB) is zero-filled before
/// every read, which for small frames costs more than the frames themselves.
const WS_READ_BUFFER_BYTES: usize = 4096;

/// What every subscriber of a run shares.
#[derive(Debug)]
pub struct Shared {
    /// This run's id; messages of other runs are not counted.
    pub run: u64,
    /// The run's clock: payload timestamps are microseconds since this instant.
    pub origin: Instant,
    /// Publishers: sequence `s` comes from publisher `s % publishers`, and only the
    /// order within one publisher is promised.
    pub publishers: u64,
    /// Publish-to-receive latency of every delivery.
    pub latency: Histogram,
    /// Distinct messages received, summed over subscribers, so the run can tell
    /// when everything published has arrived.
    pub distinct: AtomicU64,
}

impl Shared {
    /// Microseconds since the run's clock started.
    #[must_use]
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// One subscriber's account of what it received.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Messages of this run received, duplicates included.
    pub deliveries: u64,
    /// Bytes received after the handshake (WebSocket message payloads, SSE body bytes).
    pub bytes: u64,
    /// Messages received a second time.
    pub duplicates: u64,
    /// Messages that arrived after one with a higher sequence from the same publisher.
    pub out_of_order: u64,
    /// Messages of other runs (or not from the load generator at all).
    pub foreign: u64,
    /// When the last message arrived, in microseconds of the run's clock.
    pub last_us: u64,
    /// Sequences seen, one bit each.
    seen: Vec<u64>,
    /// The highest sequence seen so far, per publisher.
    highest: Vec<Option<u64>>,
    /// The connection ended before the run did, and why.
    pub ended: Option<String>,
}

impl Tally {
    fn record(&mut self, marker: Marker, shared: &Shared) {
        if marker.run != shared.run {
            self.foreign += 1;
            return;
        }
        let now = shared.now_us();
        shared.latency.record_us(now.saturating_sub(marker.sent_us));
        self.deliveries += 1;
        self.last_us = now;
        let Ok(seq) = usize::try_from(marker.seq) else { return };
        let (word, bit) = (seq / 64, 1u64 << (seq % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        shared.distinct.fetch_add(1, Ordering::Relaxed);
        let publisher = usize::try_from(marker.seq % shared.publishers.max(1)).unwrap_or(0);
        if publisher >= self.highest.len() {
            self.highest.resize(publisher + 1, None);
        }
        let highest = &mut self.highest[publisher];
        if highest.is_some_and(|h| marker.seq < h) {
            self.out_of_order += 1;
        }
        *highest = Some(highest.map_or(marker.seq, |h| h.max(marker.seq)));
    }

    /// Distinct messages of this run received.
    #[must_use]
    pub fn distinct(&self) -> u64 {
        self.seen.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// A connected subscriber, ready to read.
#[derive(Debug)]
pub enum Subscriber {
    /// A WebSocket client.
    WebSocket(Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
    /// An SSE stream.
    Sse(hyper::body::Incoming),
}

impl Subscriber {
    /// Connects to `target`: a WebSocket handshake for `ws://`, a `GET` that must
    /// answer 200 for `http://`.
    ///
    /// # Errors
    /// When the connection or the handshake fails.
    pub async fn connect(target: &Target) -> Result<Self, Error> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        match target.scheme {
            Scheme::Ws => {
                let config = WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER_BYTES);
                let (socket, _) =
                    tokio_tungstenite::client_async_with_config(target.to_string(), stream, Some(config)).await?;
                Ok(Self::WebSocket(Box::new(socket)))
            }
            Scheme::Http => {
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                let request = Request::builder()
                    .uri(&target.path_and_query)
                    .header(HOST, target.authority())
                    .header(ACCEPT, "text/event-stream")
                    .body(Empty::new())?;
                let response = sender.send_request(request).await?;
                if response.status() != StatusCode::OK {
                    return Err(format!("{target} answered {}", response.status()).into());
                }
                Ok(Self::Sse(response.into_body()))
            }
        }
    }

    /// Reads until `stop` turns true or the connection ends, recording every message.
    pub async fn read(self, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Tally {
        let mut tally = Tally::default();
        let reading = async {
            match self {
                Self::WebSocket(mut socket) => loop {
                    match socket.next().await {
                        Some(Ok(Message::Text(text))) => {
                            tally.bytes += text.len() as u64;
                            payload::scan(text.as_bytes(), |m| tally.record(m, &shared));
                        }
                        Some(Ok(Message::Binary(bytes))) => {
                            tally.bytes += bytes.len() as u64;
                            payload::scan(&bytes, |m| tally.record(m, &shared));
                        }
                        Some(Ok(Message::Close(frame))) => {
                            return Some(format!("closed by the host: {frame:?}"));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Some(e.to_string()),
                        None => return Some(String::from("connection ended")),
                    }
                },
                Self::Sse(mut body) => {
                    // Bytes after the last complete event, kept until the event ends.
                    let mut partial = BytesMut::new();
                    loop {
                        match body.frame().await {
                            Some(Ok(frame)) => {
                                let Ok(data) = frame.into_data() else { continue };
                                tally.bytes += data.len() as u64;
                                partial.extend_from_slice(&data);
                                if let Some(end) = partial.windows(2).rposition(|w| w == b"\n\n") {
                                    payload::scan(&partial[..end], |m| tally.record(m, &shared));
                                    partial.advance(end + 2);
                                }
                            }
                            Some(Err(e)) => return Some(e.to_string()),
                            None => return Some(String::from("stream ended")),
                        }
                    }
                }
            }
        };
        let ended = tokio::select! {
            ended = reading => ended,
            _ = stop.wait_for(|stop| *stop) => None,
        };
        tally.ended = ended;
        tally
    }
}
