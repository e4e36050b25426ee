//! A latency histogram shared by every task of a run: log-linear buckets of
//! microseconds (128 per power of two, so a percentile is within 0.8% of the
//! recorded value), atomic so that a thousand subscriber tasks record into one
//! fixed-size table without locks and without keeping every sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two, as a bit count.
const SUB_BITS: u32 = 7;
/// Sub-buckets per power of two.
const SUB: usize = 1 << SUB_BITS;
/// The largest power of two tracked; longer latencies (over 19 hours) count as it.
const MAX_EXP: u32 = 36;
/// Buckets in all: the exact range below `SUB`, then `SUB` per power of two.
const BUCKETS: usize = (MAX_EXP - SUB_BITS + 2) as usize * SUB;

/// Counts of latencies by bucket, plus the exact maximum.
#[derive(Debug)]
pub struct Histogram {
    /// Observations per bucket.
    buckets: Box<[AtomicU64]>,
    /// Observations in all.
    count: AtomicU64,
    /// The largest observation in microseconds, exact.
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

/// The bucket of `us`.
fn index(us: u64) -> usize {
    let us = us.min((1 << (MAX_EXP + 1)) - 1);
    if us < SUB as u64 {
        // Below 128 µs every value has its own bucket.
        return usize::try_from(us).unwrap_or(0);
    }
    let exp = 63 - us.leading_zeros();
    let sub = usize::try_from(us >> (exp - SUB_BITS)).unwrap_or(0) & (SUB - 1);
    (exp - SUB_BITS + 1) as usize * SUB + sub
}

/// The largest value that falls in bucket `i`, so percentiles never flatter.
fn upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let exp = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = (i % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    (1u64 << exp) + (sub + 1) * width - 1
}

impl Histogram {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        self.record_us(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one latency in microseconds.
    pub fn record_us(&self, us: u64) {
        self.buckets[index(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Observations recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The latency below which a share `q` (0.0 to 1.0) of observations fall, in
    /// microseconds; 0 when nothing was recorded.
    #[must_use]
    pub fn percentile_us(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        // The rank of the observation asked for, 1-based: ceil(q * total).
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return upper(i).min(self.max_us());
            }
        }
        self.max_us()
    }

    /// The largest observation in microseconds.
    #[must_use]
    pub fn max_us(&self) -> u64 {
        self.max_us.load(Ordering::Relaxed)
    }
}

/// Microseconds as milliseconds with two decimals, for the plain-text lines.
#[must_use]
pub fn ms(us: u64) -> String {
    format!("{}.{:02}", us / 1000, (us % 1000) / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut last = 0;
        for us in [0, 1, 127, 128, 129, 255, 256, 1000, 4095, 4096, 50_000, 1 << 30] {
            let i = index(us);
            assert!(i >= last, "buckets grow with the value");
            last = i;
            assert!(upper(i) >= us, "{us} lies at or below its bucket's bound {}", upper(i));
            assert!(upper(i) - us <= us / 128, "{us}: bound {} is within 1/128", upper(i));
            if i > 0 {
                assert!(upper(i - 1) < us, "{us} does not fit the previous bucket");
            }
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles_and_max() {
        let h = Histogram::default();
        assert_eq!(h.percentile_us(0.99), 0);
        for us in 1..=1000 {
            h.record_us(us);
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.percentile_us(0.5);
        assert!((500..=504).contains(&p50), "p50 {p50}");
        let p99 = h.percentile_us(0.99);
        assert!((990..=998).contains(&p99), "p99 {p99}");
        assert_eq!(h.percentile_us(1.0), 1000);
        assert_eq!(h.max_us(), 1000);
        assert_eq!(ms(12_345), "12.34");
    }
}
