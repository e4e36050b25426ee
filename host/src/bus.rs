//! The bus: bounded queues between whoever publishes events and the pipeline workers.
//!
//! The bus is sharded by ordering key. Each shard is one bounded queue drained by one
//! worker, so events with the same key (one client connection, one broker partition)
//! are processed in the order they were published, while different keys run in
//! parallel. A full shard makes the publisher wait up to the publish timeout, then
//! answers [`BusError::Busy`]: backpressure reaches the caller, nothing is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};

use crate::config::BusConfig;
use crate::event::Event;

/// Why an event was not accepted. The event comes back so the caller can answer its
/// client, retry, or pause its consumer; it is never silently lost.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The shard stayed full for the whole publish timeout.
    #[error("the event bus stayed full for {timeout_ms} ms")]
    Busy {
        /// The event that was not accepted.
        event: Box<Event>,
        /// How long the publisher waited.
        timeout_ms: u64,
    },
    /// The pipeline has stopped: the host is shutting down.
    #[error("the event bus is closed: the host is shutting down")]
    Closed(Box<Event>),
}

impl BusError {
    /// The event that was not accepted.
    #[must_use]
    pub fn into_event(self) -> Event {
        match self {
            Self::Busy { event, .. } | Self::Closed(event) => *event,
        }
    }
}

/// A run of events the bus did not take whole.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The shard had no room for the run for the whole publish timeout.
    #[error("the event bus stayed full for {timeout_ms} ms")]
    Busy {
        /// How long the publisher waited.
        timeout_ms: u64,
    },
    /// The pipeline has stopped: the host is shutting down.
    #[error("the event bus is closed: the host is shutting down")]
    Closed,
}

/// When the bus last refused a publisher as busy, for `/readyz`: a host that is
/// shedding load says so, so that the gateway sends new traffic elsewhere.
#[derive(Debug)]
pub struct Pressure {
    /// The reference point of `last_busy_ms`.
    epoch: Instant,
    /// Milliseconds after `epoch` of the last refusal, plus one; 0 for never.
    last_busy_ms: AtomicU64,
}

impl Default for Pressure {
    fn default() -> Self {
        Self { epoch: Instant::now(), last_busy_ms: AtomicU64::new(0) }
    }
}

impl Pressure {
    /// How long after the last refusal the bus still counts as busy: long enough for
    /// a health check to see it, short enough to be ready again once it drained.
    pub const WINDOW: Duration = Duration::from_secs(1);

    fn note_busy(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_busy_ms.store(now.saturating_add(1), Ordering::Relaxed);
    }

    /// True when a publisher was refused as busy within [`Pressure::WINDOW`].
    #[must_use]
    pub fn busy(&self) -> bool {
        let last = self.last_busy_ms.load(Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        last != 0 && now.saturating_add(1).saturating_sub(last) < Self::WINDOW.as_millis() as u64
    }
}

/// The publishing side of the bus. Cheap to clone: each clone shares the shards.
#[derive(Debug, Clone)]
pub struct Bus {
    /// One bounded queue per pipeline worker.
    shards: Vec<mpsc::Sender<Event>>,
    /// How long `publish` waits for space before answering `Busy`.
    publish_timeout: Duration,
    /// When publishers were last refused.
    pressure: Arc<Pressure>,
}

impl Bus {
    /// A bus shaped by `config`, and the receiving end of each shard for its worker.
    #[must_use]
    pub fn new(config: &BusConfig) -> (Self, Vec<mpsc::Receiver<Event>>) {
        let shards = if config.shards == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            config.shards
        };
        let (senders, receivers) = (0..shards).map(|_| mpsc::channel(config.queue_capacity.max(1))).unzip();
        let bus = Self {
            shards: senders,
            publish_timeout: Duration::from_millis(config.publish_timeout_ms),
            pressure: Arc::default(),
        };
        (bus, receivers)
    }

    /// When publishers were last refused, for readiness.
    #[must_use]
    pub fn pressure(&self) -> Arc<Pressure> {
        Arc::clone(&self.pressure)
    }

    fn timeout_ms(&self) -> u64 {
        u64::try_from(self.publish_timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// Queues `event` on the shard of its ordering key, waiting up to the publish
    /// timeout for space.
    ///
    /// # Errors
    /// [`BusError::Busy`] when the shard stayed full, [`BusError::Closed`] during
    /// shutdown; both give the event back.
    pub async fn publish(&self, event: Event) -> Result<(), BusError> {
        let shard = &self.shards[self.shard_of(event.ordering_key)];
        // The uncontended case takes no timer.
        let event = match shard.try_send(event) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(event)) => return Err(BusError::Closed(Box::new(event))),
            Err(TrySendError::Full(event)) => event,
        };
        match shard.send_timeout(event, self.publish_timeout).await {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(event)) => {
                self.pressure.note_busy();
                Err(BusError::Busy { event: Box::new(event), timeout_ms: self.timeout_ms() })
            }
            Err(SendTimeoutError::Closed(event)) => Err(BusError::Closed(Box::new(event))),
        }
    }

    /// The most events one [`Bus::reserve`] can ask for: a shard's capacity.
    #[must_use]
    pub fn shard_capacity(&self) -> usize {
        self.shards.first().map_or(1, mpsc::Sender::max_capacity)
    }

    /// Reserves room for `n` events (at most [`Bus::shard_capacity`]) on the shard of
    /// `ordering_key`, waiting up to the publish timeout, so that a run of events is
    /// queued whole or not at all. Waiting reservations are served in order, so a large
    /// one is not starved by small ones.
    ///
    /// # Errors
    /// [`RunError::Busy`] when the room did not come in time, [`RunError::Closed`]
    /// during shutdown.
    pub async fn reserve(&self, ordering_key: u64, n: usize) -> Result<mpsc::PermitIterator<'_, Event>, RunError> {
        let shard = &self.shards[self.shard_of(ordering_key)];
        let n = n.min(shard.max_capacity());
        match tokio::time::timeout(self.publish_timeout, shard.reserve_many(n)).await {
            Ok(Ok(permits)) => Ok(permits),
            Ok(Err(_)) => Err(RunError::Closed),
            Err(_) => {
                self.pressure.note_busy();
                Err(RunError::Busy { timeout_ms: self.timeout_ms() })
            }
        }
    }

    /// The shard an ordering key maps to. Keys are mixed first so that sequential keys
    /// (connection counters, partition numbers) spread evenly.
    #[must_use]
    pub fn shard_of(&self, ordering_key: u64) -> usize {
        let mixed = ordering_key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // The high bits are the well-mixed ones; the modulo keeps the index in range.
        usize::try_from((mixed >> 32) % self.shards.len() as u64).unwrap_or(0)
    }

    /// Events queued across all shards, for `/metrics`.
    #[must_use]
    pub fn depth(&self) -> usize {
        self.shards.iter().map(|s| s.max_capacity() - s.capacity()).sum()
    }

    /// The number of shards.
    #[must_use]
    pub fn shards(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::ComponentId;
    use bytes::Bytes;

    fn event(key: u64, n: u32) -> Event {
        let mut e = Event::new(ComponentId(0), Bytes::from(n.to_be_bytes().to_vec()));
        e.ordering_key = key;
        e
    }

    #[tokio::test]
    async fn keeps_order_per_key_across_shards() {
        let config = BusConfig { shards: 4, queue_capacity: 1024, publish_timeout_ms: 1000 };
        let (bus, receivers) = Bus::new(&config);
        for n in 0..200u32 {
            for key in 0..8u64 {
                bus.publish(event(key, n)).await.expect("room in the bus");
            }
        }
        drop(bus);
        let mut per_key: std::collections::HashMap<u64, Vec<u32>> = std::collections::HashMap::new();
        let mut shards_used = 0;
        for mut rx in receivers {
            let mut any = false;
            while let Some(e) = rx.recv().await {
                any = true;
                let n = u32::from_be_bytes(e.payload[..4].try_into().expect("four bytes"));
                per_key.entry(e.ordering_key).or_default().push(n);
            }
            shards_used += usize::from(any);
        }
        assert!(shards_used > 1, "eight keys should spread over more than one of four shards");
        for key in 0..8 {
            assert_eq!(per_key[&key], (0..200).collect::<Vec<_>>(), "key {key} out of order");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_shard_answers_busy_with_the_event_after_the_timeout() {
        let config = BusConfig { shards: 1, queue_capacity: 2, publish_timeout_ms: 50 };
        let (bus, mut receivers) = Bus::new(&config);
        bus.publish(event(1, 1)).await.expect("room");
        bus.publish(event(1, 2)).await.expect("room");
        assert_eq!(bus.depth(), 2);
        let started = tokio::time::Instant::now();
        let err = bus.publish(event(1, 3)).await.expect_err("the shard is full");
        assert!(matches!(err, BusError::Busy { timeout_ms: 50, .. }), "{err}");
        assert_eq!(started.elapsed(), Duration::from_millis(50), "waited exactly the publish timeout");
        assert_eq!(&err.into_event().payload[..], &3u32.to_be_bytes());

        // Once the worker takes one, the publisher gets in.
        let first = receivers[0].recv().await.expect("queued");
        assert_eq!(&first.payload[..], &1u32.to_be_bytes());
        bus.publish(event(1, 4)).await.expect("room again");
        drop(receivers);
        assert!(matches!(bus.publish(event(1, 5)).await, Err(BusError::Closed(_))));
    }
}
