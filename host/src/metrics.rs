//! Counters and the Prometheus text exposition.
//!
//! Counters are plain atomics owned by the thing they count (a route, a component, an
//! adapter), so the hot path pays one relaxed add. `/metrics` walks the owners and
//! writes the text format; nothing is registered globally.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// How a delivery ended: the `outcome` label of `events_total` and the packet log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The target confirmed the event.
    Delivered,
    /// A queue stayed full for the publish timeout.
    Busy,
    /// No route leaves the event's source.
    NoRoute,
    /// An adapter refused the event or failed on its batch.
    AdapterError,
    /// The target (a broker, a client hub) refused it or did not confirm.
    TargetError,
    /// Shutdown came before confirmation.
    ShuttingDown,
    /// The target (a broker) was unreachable, so the event was not sent or its
    /// confirmation was lost.
    Unavailable,
    /// The target did not confirm in time: the event may or may not have arrived.
    Timeout,
    /// The record was larger than the endpoint's `max_message_bytes`.
    TooLarge,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Self; 9] = [
        Self::Delivered,
        Self::Busy,
        Self::NoRoute,
        Self::AdapterError,
        Self::TargetError,
        Self::ShuttingDown,
        Self::Unavailable,
        Self::Timeout,
        Self::TooLarge,
    ];

    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Busy => "busy",
            Self::NoRoute => "no_route",
            Self::AdapterError => "adapter_error",
            Self::TargetError => "target_error",
            Self::ShuttingDown => "shutting_down",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::TooLarge => "too_large",
        }
    }
}

/// Latency bucket upper bounds in microseconds, from 100 µs to 5 s.
const LATENCY_BUCKETS_US: [u64; 10] = [100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of observations in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let slot = LATENCY_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS_US.get(i).map_or_else(|| String::from("+Inf"), |us| seconds(*us));
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = seconds(self.sum_us.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

fn seconds(us: u64) -> String {
    // Microseconds as exact decimal seconds, without float rounding noise.
    let text = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Per-route counters: events by outcome and delivery latency.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Events by [`Outcome`], indexed in [`Outcome::ALL`] order.
    outcomes: [AtomicU64; Outcome::ALL.len()],
    /// Time from receipt to the target's confirmation, for delivered events.
    pub latency: Histogram,
}

impl RouteStats {
    /// Counts one event with `outcome`.
    pub fn record(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Events counted with `outcome`.
    #[must_use]
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize].load(Ordering::Relaxed)
    }
}

/// Per-component counters.
#[derive(Debug, Default)]
pub struct ComponentStats {
    /// Client connects seen as lifecycle events.
    pub connects: AtomicU64,
    /// Client disconnects seen as lifecycle events.
    pub disconnects: AtomicU64,
    /// Open client connections (entrypoints).
    pub connections: AtomicI64,
    /// Events from this source that no route took.
    pub unrouted: AtomicU64,
    /// Ring entries evicted to respect the ring's limits (entrypoints that serve events).
    pub ring_evictions: AtomicU64,
    /// Clients disconnected or skipped ahead because the ring moved past them.
    pub slow_consumers: AtomicU64,
    /// Broker connections re-established after one was lost (endpoints).
    pub reconnects: AtomicU64,
}

/// Writes Prometheus text-format families.
#[derive(Debug, Default)]
pub struct Exposition {
    /// The text so far.
    out: String,
}

impl Exposition {
    /// Starts a family with its help text and type.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample; `labels` is `key="value",...` (already escaped) or empty.
    pub fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) -> &mut Self {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
        self
    }

    /// A histogram's buckets, sum and count.
    pub fn histogram(&mut self, name: &str, labels: &str, histogram: &Histogram) -> &mut Self {
        histogram.write(&mut self.out, name, labels);
        self
    }

    /// The finished text.
    #[must_use]
    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes a label value for the text format.
#[must_use]
pub fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_in_seconds() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(9));
        let mut e = Exposition::default();
        e.histogram("lat", "route=\"a->b\"", &h);
        let text = e.finish();
        assert!(text.contains("lat_bucket{route=\"a->b\",le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("lat_bucket{route=\"a->b\",le=\"0.001\"} 2\n"), "{text}");
        assert!(text.contains("lat_bucket{route=\"a->b\",le=\"5\"} 2\n"), "{text}");
        assert!(text.contains("lat_bucket{route=\"a->b\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("lat_sum{route=\"a->b\"} 9.00075\n"), "{text}");
        assert!(text.contains("lat_count{route=\"a->b\"} 3\n"), "{text}");
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
