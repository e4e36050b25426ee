//! The packet log: one JSON object per line on stdout for every packet, written once
//! its delivery has an outcome. The schema is documented and versioned in
//! `docs/packet-log.md`; field names are a contract with log pipelines.
//!
//! Lines are formatted by hand into a caller-owned buffer (no allocation per line)
//! and written in one `write` per batch of lines, under a lock so that lines from
//! different workers never interleave.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::PacketLogConfig;
use crate::event::{DeliveryError, Event, Header};
use crate::metrics::Outcome;
use crate::routing::Route;

/// The schema version written in every line's `v` field.
pub const SCHEMA_VERSION: u32 = 1;

/// Where lines go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Standard output, for a log shipper.
    Stdout,
    /// An in-memory buffer, for tests and benchmarks.
    Memory(Arc<Mutex<Vec<u8>>>),
    /// Nowhere: the log is switched off.
    Discard,
}

/// One delivery's outcome, as the packet log records it.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// The event delivered or not.
    pub event: &'a Event,
    /// The source component's name.
    pub source: &'a str,
    /// The route, when one was found.
    pub route: Option<&'a Route>,
    /// The target component's name, when there was a route.
    pub target: Option<&'a str>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed, when it did.
    pub error: Option<&'a DeliveryError>,
}

/// The packet log writer shared by every worker.
#[derive(Debug)]
pub struct PacketLog {
    /// Where lines go.
    sink: Sink,
    /// Share of successful deliveries logged.
    sample_rate: f64,
    /// Successful deliveries seen, for even sampling.
    seen: AtomicU64,
    /// Whether headers are written.
    include_headers: bool,
    /// Whether payloads are written.
    include_payload: bool,
    /// Lower-cased header names whose values are redacted.
    redact: Vec<String>,
}

impl PacketLog {
    /// A packet log configured by `config`, writing to `sink`.
    #[must_use]
    pub fn new(config: &PacketLogConfig, sink: Sink) -> Self {
        Self {
            sink: if config.enabled { sink } else { Sink::Discard },
            sample_rate: config.sample_rate,
            seen: AtomicU64::new(0),
            include_headers: config.include_headers,
            include_payload: config.include_payload,
            redact: config.redact_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Appends the line for `packet` to `buf` when the log is on and, for successful
    /// deliveries, the sample takes it. Failures are always written.
    pub fn record(&self, buf: &mut Vec<u8>, packet: &Packet<'_>) {
        if matches!(self.sink, Sink::Discard) || !self.sampled(packet.outcome) {
            return;
        }
        self.format(buf, packet, SystemTime::now(), Instant::now());
    }

    fn sampled(&self, outcome: Outcome) -> bool {
        if outcome != Outcome::Delivered || self.sample_rate >= 1.0 {
            return true;
        }
        // Keep a line whenever the running count times the rate crosses an integer:
        // exactly `rate` of the lines, evenly spread, with no random source.
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)] // Counts far below 2^52 in practice; an off-by-one sample is harmless.
        let crossed = ((n + 1) as f64 * self.sample_rate).floor() > (n as f64 * self.sample_rate).floor();
        crossed
    }

    fn format(&self, buf: &mut Vec<u8>, p: &Packet<'_>, now: SystemTime, now_instant: Instant) {
        let e = p.event;
        let mut line = LineWriter(buf);
        line.raw("{\"v\":");
        line.display(SCHEMA_VERSION);
        line.raw(",\"ts\":\"");
        write_timestamp(&mut line, now);
        line.raw("\",\"event_id\":");
        line.string_display(&e.id);
        if let Some(route) = p.route {
            line.raw(",\"route\":");
            line.string(&route.label);
            line.raw(",\"direction\":\"");
            line.raw(route.direction.as_str());
            line.raw("\"");
        }
        line.raw(",\"source\":");
        line.string(p.source);
        if let Some(target) = p.target {
            line.raw(",\"target\":");
            line.string(target);
        }
        if let Some(client) = &e.client_id {
            line.raw(",\"client_id\":");
            line.string(client.as_str());
        }
        if let Some(destination) = &e.destination {
            line.raw(",\"destination\":");
            line.string(destination.as_str());
        }
        line.raw(",\"bytes\":");
        line.display(e.payload.len());
        line.raw(",\"outcome\":\"");
        line.raw(p.outcome.as_str());
        line.raw("\"");
        if let Some(error) = p.error {
            line.raw(",\"error\":");
            line.string_display(error);
        }
        line.raw(",\"latency_us\":");
        line.display(now_instant.saturating_duration_since(e.received_at).as_micros());
        if self.include_headers {
            self.write_headers(&mut line, &e.headers);
        }
        if self.include_payload {
            line.raw(",\"payload\":");
            line.string(&String::from_utf8_lossy(&e.payload));
        }
        line.raw("}\n");
    }

    /// Writes `,"headers":{..}`. Brokers and HTTP allow a header name to repeat, a JSON
    /// object does not (log pipelines refuse the line or keep one value), so each name is
    /// written once, at its first place, with its values joined by `, ` in order, as HTTP
    /// combines repeated fields. Looking back for earlier names is quadratic in the
    /// header count, which is small, and needs no allocation.
    fn write_headers(&self, line: &mut LineWriter<'_>, headers: &[Header]) {
        line.raw(",\"headers\":{");
        let mut first = true;
        for (i, h) in headers.iter().enumerate() {
            let name = h.name.as_str();
            if headers[..i].iter().any(|earlier| earlier.name.as_str() == name) {
                continue;
            }
            if !first {
                line.raw(",");
            }
            first = false;
            line.string(name);
            line.raw(":");
            if self.redact.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                line.string("[redacted]");
                continue;
            }
            line.raw("\"");
            for (j, same) in headers[i..].iter().filter(|later| later.name.as_str() == name).enumerate() {
                if j > 0 {
                    line.raw(", ");
                }
                let _ = JsonEscape(&mut *line).write_str(&String::from_utf8_lossy(&same.value));
            }
            line.raw("\"");
        }
        line.raw("}");
    }

    /// Writes out and clears `buf`. One write per call keeps lines whole.
    pub fn flush(&self, buf: &mut Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                // A closed or full stdout must not stop delivery; the lines are lost,
                // the events are not.
                let _ = out.write_all(buf).and_then(|()| out.flush());
            }
            Sink::Memory(memory) => memory.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf),
            Sink::Discard => {}
        }
        buf.clear();
    }
}

/// Appends JSON pieces to a byte buffer.
struct LineWriter<'a>(&'a mut Vec<u8>);

impl LineWriter<'_> {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn display(&mut self, value: impl std::fmt::Display) {
        let _ = write!(self, "{value}");
    }

    fn string_display(&mut self, value: impl std::fmt::Display) {
        self.raw("\"");
        let _ = write!(JsonEscape(self), "{value}");
        self.raw("\"");
    }

    fn string(&mut self, s: &str) {
        self.raw("\"");
        let _ = JsonEscape(self).write_str(s);
        self.raw("\"");
    }
}

impl std::fmt::Write for LineWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.raw(s);
        Ok(())
    }
}

/// Escapes what is written through it as the inside of a JSON string.
struct JsonEscape<'a, 'b>(&'a mut LineWriter<'b>);

impl std::fmt::Write for JsonEscape<'_, '_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escaped: Option<&str> = match b {
                b'"' => Some("\\\""),
                b'\\' => Some("\\\\"),
                b'\n' => Some("\\n"),
                b'\r' => Some("\\r"),
                b'\t' => Some("\\t"),
                0..0x20 => None,
                _ => continue,
            };
            self.0.raw(&s[start..i]);
            match escaped {
                Some(e) => self.0.raw(e),
                None => {
                    let _ = write!(self.0, "\\u{b:04x}");
                }
            }
            start = i + 1;
        }
        self.0.raw(&s[start..]);
        Ok(())
    }
}

/// Writes `now` as RFC 3339 UTC with milliseconds, `2026-11-27T14:05:09.123Z`.
fn write_timestamp(line: &mut LineWriter<'_>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rem = secs % 86_400;
    let _ = write!(
        line,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after Howard
/// Hinnant's `civil_from_days` algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, Text};
    use crate::metrics::RouteStats;
    use crate::routing::{ComponentId, Direction};
    use bytes::Bytes;
    use std::time::Duration;

    fn route() -> Route {
        Route {
            index: 0,
            source: ComponentId(0),
            target: ComponentId(1),
            direction: Direction::Upstream,
            label: Arc::from("ingest->orders"),
            stats: Arc::new(RouteStats::default()),
        }
    }

    fn event() -> Event {
        let mut e = Event::new(ComponentId(0), Bytes::from_static(b"secret payload"));
        e.id = EventId::Given(Text::from("id-\"1\""));
        e.client_id = Some(Text::from("c1"));
        e.destination = Some(Text::from("orders"));
        e.headers = vec![Header::new("Authorization", "Bearer abc"), Header::new("x-tenant", "t1")];
        e
    }

    fn line(config: &PacketLogConfig, outcome: Outcome, error: Option<&DeliveryError>) -> serde_json::Value {
        let log = PacketLog::new(config, Sink::Discard);
        let (route, mut event) = (route(), event());
        event.received_at = Instant::now() - Duration::from_millis(3);
        let packet =
            Packet { event: &event, source: "ingest", route: Some(&route), target: Some("orders"), outcome, error };
        let mut buf = Vec::new();
        let now = UNIX_EPOCH + Duration::from_millis(1_795_788_309_123);
        log.format(&mut buf, &packet, now, Instant::now());
        assert_eq!(buf.last(), Some(&b'\n'));
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1, "exactly one line");
        serde_json::from_slice(&buf).expect("the line is JSON")
    }

    #[test]
    fn writes_the_documented_fields_and_never_the_payload_by_default() {
        let v = line(&PacketLogConfig::default(), Outcome::Delivered, None);
        assert_eq!(v["v"], 1);
        assert_eq!(v["ts"], "2026-11-27T14:05:09.123Z");
        assert_eq!(v["event_id"], "id-\"1\"");
        assert_eq!(v["route"], "ingest->orders");
        assert_eq!(v["direction"], "upstream");
        assert_eq!(v["source"], "ingest");
        assert_eq!(v["target"], "orders");
        assert_eq!(v["client_id"], "c1");
        assert_eq!(v["destination"], "orders");
        assert_eq!(v["bytes"], 14);
        assert_eq!(v["outcome"], "delivered");
        assert!(v["latency_us"].as_u64().expect("a number") >= 3_000);
        assert!(v.get("payload").is_none() && v.get("headers").is_none() && v.get("error").is_none());
    }

    #[test]
    fn redacts_sensitive_headers_when_headers_are_included() {
        let config = PacketLogConfig { include_headers: true, include_payload: true, ..PacketLogConfig::default() };
        let error = DeliveryError::Busy(String::from("orders"));
        let v = line(&config, Outcome::Busy, Some(&error));
        assert_eq!(v["headers"]["Authorization"], "[redacted]");
        assert_eq!(v["headers"]["x-tenant"], "t1");
        assert_eq!(v["payload"], "secret payload");
        assert_eq!(v["outcome"], "busy");
        assert_eq!(v["error"], "busy: orders stayed full for the publish timeout");
    }

    /// Found by the `packet_log` fuzz target: a repeated header name was written as a
    /// repeated key, which log pipelines refuse or reduce to one value.
    #[test]
    fn writes_a_repeated_header_name_once_with_its_values_joined() {
        let config = PacketLogConfig { include_headers: true, ..PacketLogConfig::default() };
        let log = PacketLog::new(&config, Sink::Discard);
        let mut event = event();
        event.headers = vec![
            Header::new("", ""),
            Header::new("x-a", "1"),
            Header::new("Cookie", "a=b"),
            Header::new("x-a", Bytes::from_static(b"\xff\"2\"")),
            Header::new("", ""),
            Header::new("cookie", "c=d"),
            Header::new("X-A", "3"),
        ];
        let packet =
            Packet { event: &event, source: "s", route: None, target: None, outcome: Outcome::Delivered, error: None };
        let mut buf = Vec::new();
        log.format(&mut buf, &packet, UNIX_EPOCH, Instant::now());
        let line = String::from_utf8(buf).expect("the line is UTF-8");
        let headers = concat!(
            r#","headers":{"":", ","x-a":"1, "#,
            "\u{fffd}",
            r#"\"2\"","Cookie":"[redacted]","cookie":"[redacted]","X-A":"3"}"#
        );
        assert!(line.contains(headers), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).expect("the line is JSON");
        assert_eq!(value["headers"]["x-a"], "1, \u{fffd}\"2\"");
    }

    #[test]
    fn samples_successes_evenly_and_keeps_every_failure() {
        let config = PacketLogConfig { sample_rate: 0.25, ..PacketLogConfig::default() };
        let log = PacketLog::new(&config, Sink::Discard);
        let kept = (0..1000).filter(|_| log.sampled(Outcome::Delivered)).count();
        assert_eq!(kept, 250);
        assert!((0..10).all(|_| log.sampled(Outcome::TargetError)));
    }

    #[test]
    fn converts_days_to_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
    }
}
