//! The published payload and how subscribers find it again.
//!
//! A payload is one JSON object, `{"lg":[RUN,SEQ,SENT_US],"pad":"xxxx"}`, padded to
//! the asked size. The marker survives every downstream encoding of the default
//! adapters (a raw WebSocket frame, an SSE `data:` line, the JSON envelope), so one
//! scanner reads all of them. `RUN` keeps another run's messages from being counted.

/// The bytes that open a marker.
const MARKER: &[u8] = b"\"lg\":[";

/// What a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The run that published it.
    pub run: u64,
    /// Its sequence number within the run, from 0.
    pub seq: u64,
    /// When it was sent, in microseconds since the run's clock started.
    pub sent_us: u64,
}

/// The payload for `marker`, padded with `x` to `size` bytes (or longer, when
/// the marker alone does not fit).
#[must_use]
pub fn build(marker: Marker, size: usize) -> Vec<u8> {
    let head = format!("{{\"lg\":[{},{},{}],\"pad\":\"", marker.run, marker.seq, marker.sent_us);
    let tail = "\"}";
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut out = Vec::with_capacity(head.len() + pad + tail.len());
    out.extend_from_slice(head.as_bytes());
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Calls `found` for every marker in `bytes`, in order.
pub fn scan(bytes: &[u8], mut found: impl FnMut(Marker)) {
    let mut rest = bytes;
    while let Some(at) = find(rest, MARKER) {
        rest = &rest[at + MARKER.len()..];
        if let Some((marker, used)) = parse_numbers(rest) {
            found(marker);
            rest = &rest[used..];
        }
    }
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(offset) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + offset;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// `RUN,SEQ,SENT_US]` at the start of `bytes`, and how many bytes it took.
fn parse_numbers(bytes: &[u8]) -> Option<(Marker, usize)> {
    let mut values = [0u64; 3];
    let mut at = 0;
    for (i, value) in values.iter_mut().enumerate() {
        let digits = bytes[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 20 {
            return None;
        }
        for &b in &bytes[at..at + digits] {
            *value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        at += digits;
        let separator = if i == 2 { b']' } else { b',' };
        if bytes.get(at) != Some(&separator) {
            return None;
        }
        at += 1;
    }
    Some((Marker { run: values[0], seq: values[1], sent_us: values[2] }, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<Marker> {
        let mut out = Vec::new();
        scan(bytes, |m| out.push(m));
        out
    }

    #[test]
    fn builds_to_size_and_reads_back_in_every_encoding() {
        let m = Marker { run: 77, seq: 3, sent_us: 123_456 };
        let payload = build(m, 100);
        assert_eq!(payload.len(), 100);
        assert!(serde_json::from_slice::<serde_json::Value>(&payload).is_ok(), "the payload is JSON");
        assert_eq!(all(&payload), vec![m], "raw frame");
        let text = String::from_utf8(payload).unwrap_or_default();
        let sse =
            format!("retry: 2000\n\nid: 5\ndata: {text}\n\n:\n\nid: 6\ndata: {}\n\n", text.replace("[77,3,", "[77,4,"));
        assert_eq!(all(sse.as_bytes()), vec![m, Marker { seq: 4, ..m }], "SSE frames");
        let envelope = format!("{{\"type\":\"message\",\"seq\":9,\"topic\":\"chat\",\"data\":{text}}}");
        assert_eq!(all(envelope.as_bytes()), vec![m], "JSON envelope");
        assert_eq!(build(m, 1).len(), 29, "too small a size leaves the marker whole");
    }

    #[test]
    fn ignores_broken_markers() {
        assert!(all(b"\"lg\":[1,2]").is_empty());
        assert!(all(b"\"lg\":[1,,2,3]").is_empty());
        assert!(all(b"\"lg\":[99999999999999999999999,1,2]").is_empty());
        assert_eq!(all(b"\"lg\":[x]\"lg\":[1,2,3]").len(), 1);
    }
}
