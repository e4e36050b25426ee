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
/// `/proc/net/tcp`'s code for an established connection.
const TCP_ESTABLISHED: u8 = 0x01;

/// An open connection nobody reads.
#[derive(Debug)]
pub struct Held {
    /// The socket, kept only so that the connection stays open: nothing reads or
    /// writes it after the handshake, and dropping it closes the connection.
    _stream: TcpStream,
    /// Its local port, to find it in `/proc/net/tcp`.
    local_port: u16,
    /// The host's port.
    host_port: u16,
}

/// One line of `/proc/net/tcp`.
#[derive(Debug, Clone, Copy)]
pub struct SocketState {
    /// The TCP state, in the kernel's numbering (1 is established).
    pub state: u8,
    /// Bytes in the send queue.
    pub send_queue: u64,
    /// Bytes in the receive queue.
    pub receive_queue: u64,
}

/// Where the bytes a stalled client never read are, and whether the host gave up on it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stall {
    /// Bytes in the client socket's receive queue.
    pub client_queue: u64,
    /// Bytes in the host socket's send queue (written by the host, not yet sent).
    pub host_queue: u64,
    /// The host closed the connection: its socket or the client's is no longer
    /// established, whatever is still queued unread.
    pub closed: bool,
}

/// Every IPv4 TCP socket between two ports of 127.0.0.1, by (local port, remote
/// port), from `/proc/net/tcp`; `None` where that file cannot be read.
#[must_use]
pub fn sockets() -> Option<HashMap<(u16, u16), SocketState>> {
    std::fs::read_to_string("/proc/net/tcp").ok().map(|table| parse_sockets(&table))
}

/// The loopback sockets of a `/proc/net/tcp` table.
fn parse_sockets(table: &str) -> HashMap<(u16, u16), SocketState> {
    let mut sockets = HashMap::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(state), Some(sizes)) =
            (fields.get(1), fields.get(2), fields.get(3), fields.get(4))
        else {
            continue;
        };
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
        if let (Ok(state), Ok(send_queue), Ok(receive_queue)) =
            (u8::from_str_radix(state, 16), u64::from_str_radix(tx, 16), u64::from_str_radix(rx, 16))
        {
            sockets.insert((local, remote), SocketState { state, send_queue, receive_queue });
        }
    }
    sockets
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
        let (local_port, host_port) = (stream.local_addr()?.port(), target.addr.port());
        Ok(Self { _stream: stream, local_port, host_port })
    }

    /// How much the host wrote that this client never read, and whether the host
    /// closed it, from the kernel's socket table (`sockets` is [`sockets`]). Nothing
    /// is read from the socket, so the answer does not disturb what it measures.
    #[must_use]
    pub fn stall(&self, sockets: &HashMap<(u16, u16), SocketState>) -> Stall {
        let client = sockets.get(&(self.local_port, self.host_port));
        let host = sockets.get(&(self.host_port, self.local_port));
        Stall {
            client_queue: client.map_or(0, |s| s.receive_queue),
            host_queue: host.map_or(0, |s| s.send_queue),
            // A host that closes while its unsent data waits still sends its FIN
            // last, so its own socket's state tells first; a reset socket leaves
            // the table altogether.
            closed: [client, host].iter().any(|s| s.is_none_or(|s| s.state != TCP_ESTABLISHED)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loopback_sockets_with_their_state_and_queues() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4830 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:4830 0100007F:D6A4 04 002AE8C9:00000000 01:00000014 00000000     0        0 0 1 0 20 4 0 10 -1
   2: 0100007F:D6A4 0100007F:4830 01 00000000:00002000 00:00000000 00000000     0        0 3 1 0 20 4 0 10 -1
   3: 0A000001:0050 0100007F:D6A5 01 00000010:00000000 00:00000000 00000000     0        0 4 1 0 20 4 0 10 -1
";
        let sockets = parse_sockets(table);
        assert_eq!(sockets.len(), 2, "neither the listener (remote 0.0.0.0) nor a socket off loopback counts");
        let host = sockets.get(&(18480, 54948)).map(|s| (s.state, s.send_queue, s.receive_queue));
        assert_eq!(host, Some((0x04, 0x2A_E8C9, 0)), "the host's side: FIN_WAIT1 with 2.8 MB unsent");
        let client = sockets.get(&(54948, 18480)).map(|s| (s.state, s.send_queue, s.receive_queue));
        assert_eq!(client, Some((TCP_ESTABLISHED, 0, 0x2000)));
    }
}
