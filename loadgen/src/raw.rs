//! Connections opened by hand and then left alone: the idle clients of the memory
//! benchmark and the stalled subscribers of the isolation benchmark.
//!
//! The handshake is written and the answer's head read directly on the socket;
//! after that nothing reads it, so the load generator holds one socket and no task
//! per connection, and a stalled client really receives at 0 bytes/s once its small
//! receive buffer is full.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::Error;
use crate::target::{Scheme, Target};

/// The most a response head may take.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a look at a held connection waits for a first byte.
const PEEK_WAIT: Duration = Duration::from_millis(20);

/// An open connection nobody reads.
#[derive(Debug)]
pub struct Held {
    /// The socket; dropping it closes the connection.
    pub stream: TcpStream,
}

/// Where the bytes a stalled client never read are, and whether the host gave up on it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stall {
    /// Bytes in the client socket's receive queue.
    pub client_queue: u64,
    /// Bytes in the host socket's send queue (written by the host, not yet sent).
    pub host_queue: u64,
    /// The host had closed the connection.
    pub closed: bool,
}

/// The send and receive queues of every IPv4 TCP socket, by (local port, remote
/// port) on 127.0.0.1, from `/proc/net/tcp`; empty where that file does not exist.
#[must_use]
pub fn socket_queues() -> HashMap<(u16, u16), (u64, u64)> {
    let mut queues = HashMap::new();
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return queues };
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(sizes)) = (fields.get(1), fields.get(2), fields.get(4)) else { continue };
        let loopback_port = |address: &str| {
            let (ip, port) = address.split_once(':')?;
            // 127.0.0.1 in the kernel's byte order.
            (ip == "0100007F").then(|| u16::from_str_radix(port, 16).ok()).flatten()
        };
        let (Some(local), Some(remote), Some((tx, rx))) =
            (loopback_port(local), loopback_port(remote), sizes.split_once(':'))
        else {
            continue;
        };
        if let (Ok(tx), Ok(rx)) = (u64::from_str_radix(tx, 16), u64::from_str_radix(rx, 16)) {
            queues.insert((local, remote), (tx, rx));
        }
    }
    queues
}

impl Held {
    /// Opens a WebSocket (`ws://`) or SSE (`http://`) connection to `target` and
    /// reads the answer's head. `receive_buffer` shrinks the socket's receive
    /// buffer first, so that a client that stops reading stalls the host's writes soon.
    ///
    /// # Errors
    /// When the connection or the handshake fails, or the host refuses it.
    pub async fn open(target: &Target, receive_buffer: Option<u32>) -> Result<Self, Error> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, Self::handshake(target, receive_buffer))
            .await
            .map_err(|_| format!("{target}: no handshake answer within 10 s"))?
    }

    async fn handshake(target: &Target, receive_buffer: Option<u32>) -> Result<Self, Error> {
        let socket = TcpSocket::new_v4()?;
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let mut stream = socket.connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let (request, expected) = match target.scheme {
            Scheme::Ws => (
                format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bG9hZGdlbi1rZXktMDAwMA==\r\n\r\n",
                    target.path_and_query,
                    target.authority()
                ),
                "101",
            ),
            Scheme::Http => (
                format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
                    target.path_and_query,
                    target.authority()
                ),
                "200",
            ),
        };
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > MAX_HEAD_BYTES {
                return Err(format!("{target}: the answer's head is over {MAX_HEAD_BYTES} bytes").into());
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(format!("{target}: closed during the handshake").into());
            }
            head.extend_from_slice(&chunk[..n]);
        }
        let status_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let status = String::from_utf8_lossy(status_line);
        if status.split(' ').nth(1) != Some(expected) {
            return Err(format!("{target}: expected {expected}, got `{status}`").into());
        }
        Ok(Self { stream })
    }

    /// How much the host wrote that this client never read, from the kernel's
    /// queues (`queues` is [`socket_queues`]), and whether the host closed it.
    /// Nothing is read from the socket.
    pub async fn stall(&self, queues: &HashMap<(u16, u16), (u64, u64)>) -> Stall {
        let mut stall = Stall::default();
        if let (Ok(local), Ok(host)) = (self.stream.local_addr(), self.stream.peer_addr()) {
            stall.client_queue = queues.get(&(local.port(), host.port())).map_or(0, |(_, rx)| *rx);
            stall.host_queue = queues.get(&(host.port(), local.port())).map_or(0, |(tx, _)| *tx);
        }
        // A peek finds 0 bytes only at the end of the stream (the host closed it),
        // and waits while nothing has arrived (the connection is open and quiet).
        let mut byte = [0u8; 1];
        stall.closed = match tokio::time::timeout(PEEK_WAIT, self.stream.peek(&mut byte)).await {
            Ok(Ok(n)) => n == 0,
            Ok(Err(_)) => true,
            Err(_) => false,
        };
        stall
    }
}
