//! The hub behind every entrypoint that serves events to clients (SSE, WebSocket,
//! HTTP GET): a bounded replay ring of frames, each encoded once by the entrypoint's
//! adapter, read by every client through its own cursor and filter.
//!
//! One task appends (the hub task, draining the entrypoint's target queue); any
//! number of client writer tasks read. A client is a cursor into the ring plus a
//! filter: reading clones `Arc`s of the shared entries, nothing is copied or encoded
//! per client. A client whose cursor falls out of the ring is told so explicitly
//! ([`Read::Expired`]); it is never skipped silently.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::watch;

use crate::adapter::Adapter;
use crate::config::Problems;
use crate::event::{Event, Header, Text};
use crate::mapping;
use crate::pipeline::{Recorder, TargetReceiver};
use crate::routing::{ComponentId, Direction};

/// The event header that targets an event at one client (request/reply): only the
/// client whose id equals its value receives it.
pub const TARGET_CLIENT_HEADER: &str = "client-id";

/// `ring = { ... }` of an entrypoint that serves events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    /// Events kept for replay and for slow clients.
    pub messages: usize,
    /// Bytes of encoded frames kept, whichever limit is reached first.
    pub bytes: usize,
    /// What happens to a client the ring has moved past.
    pub slow_consumer: SlowConsumer,
    /// Events encoded per adapter call at most.
    pub max_batch: usize,
    /// Deliveries queued for the hub before the pipeline waits.
    pub queue_capacity: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            messages: 10_000,
            bytes: 64 * 1024 * 1024,
            slow_consumer: SlowConsumer::Disconnect,
            max_batch: 256,
            queue_capacity: 1024,
        }
    }
}

impl RingConfig {
    pub(crate) fn validate(&self, path: &str, problems: &mut Problems) {
        for (field, value) in [
            ("messages", self.messages),
            ("bytes", self.bytes),
            ("max_batch", self.max_batch),
            ("queue_capacity", self.queue_capacity),
        ] {
            problems.check(value > 0, format!("{path}.ring.{field}"), "must be at least 1");
        }
    }
}

/// The policy for a client that fell out of the ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumer {
    /// Disconnect it with a reason (WebSocket 1013, SSE end of stream); it resumes
    /// from its cursor when it reconnects and learns what it missed.
    #[default]
    Disconnect,
    /// Skip it ahead to the oldest event still held and tell it how many it missed.
    DropOldest,
}

/// The first sequence of every ring in this process: the process's start time in
/// microseconds. Sequences so do not repeat across restarts (a cursor from an earlier
/// run is older than the ring and is told so, instead of pointing at unrelated
/// events), and rings fed the same events in the same order number them alike, so a
/// client can match what it got over SSE, WebSocket and polling.
fn first_sequence() -> u64 {
    static FIRST: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *FIRST.get_or_init(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1))
    })
}

/// One encoded event in the ring.
#[derive(Debug)]
pub struct Entry {
    /// The ring sequence: SSE `id:`, HTTP GET cursor, WebSocket resume point.
    pub sequence: u64,
    /// The frame as the adapter encoded it, shared by every client.
    pub frame: Bytes,
    /// The frame is binary (a WebSocket binary message).
    pub binary: bool,
    /// The event's destination, for topic filters.
    pub destination: Option<Text>,
    /// The event's headers, for header filters and targeting.
    pub headers: Vec<Header>,
    /// The event's payload before encoding, for clients that ask for it raw.
    pub payload: Bytes,
}

impl Entry {
    fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|h| h.name.as_str().eq_ignore_ascii_case(name)).map(|h| &h.value)
    }
}

/// Which events a client receives.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Topic patterns; empty means every topic. `*` matches one `/`-separated level,
    /// `#` (last) matches any number of remaining levels.
    pub topics: Vec<String>,
    /// Header equality: every listed header must be present with this value.
    pub headers: Vec<(String, Bytes)>,
    /// This client's id, for events targeted with the `client-id` header.
    pub client_id: String,
}

impl Filter {
    /// True when `entry` is for this client.
    #[must_use]
    pub fn matches(&self, entry: &Entry) -> bool {
        if let Some(target) = entry.header(TARGET_CLIENT_HEADER) {
            return target.as_ref() == self.client_id.as_bytes();
        }
        let topic_ok = self.topics.is_empty()
            || entry.destination.as_ref().is_some_and(|d| self.topics.iter().any(|p| topic_matches(p, d.as_str())));
        topic_ok && self.headers.iter().all(|(name, value)| entry.header(name) == Some(value))
    }
}

/// Matches `topic` against `pattern`: levels split on `/`, `*` is one level, a
/// final `#` is zero or more levels.
#[must_use]
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in pattern.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Where a client that asked to resume at `cursor` continues, and the gap it is told
/// of. The same for the three entrypoints: an SSE `Last-Event-ID`, a WebSocket cursor
/// or resume frame, and a poll's `cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The ring holds the cursor (or it is 0, the oldest held): continue there.
    At(u64),
    /// The cursor is not in the ring: continue at `oldest`, telling the client how many
    /// events it `missed`, or that this is unknown (`None`) for a cursor this ring did
    /// not issue (another run or another replica).
    Gap {
        /// Events the client will not get, when known.
        missed: Option<u64>,
        /// The oldest sequence held: where the client continues.
        oldest: u64,
    },
}

impl Resume {
    /// The gap as JSON: `{"missed": N or null, "resume": oldest}`; `None` for no gap.
    #[must_use]
    pub fn gap_json(self) -> Option<serde_json::Value> {
        match self {
            Self::At(_) => None,
            Self::Gap { missed, oldest } => Some(serde_json::json!({ "missed": missed, "resume": oldest })),
        }
    }

    /// The cursor the client continues from.
    #[must_use]
    pub fn cursor(self) -> u64 {
        match self {
            Self::At(cursor) => cursor,
            Self::Gap { oldest, .. } => oldest,
        }
    }
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Entries were appended to the output (maybe none); continue from `next`.
    Ok {
        /// The cursor to read from next time.
        next: u64,
    },
    /// The cursor is older than the oldest entry held (`missed` events are gone), or
    /// was not issued by this ring (`missed` is unknown).
    Expired {
        /// The oldest sequence still held (the cursor to resume from).
        oldest: u64,
        /// How many events the client missed, when known.
        missed: Option<u64>,
    },
}

/// The ring itself, behind the hub's lock.
#[derive(Debug, Default)]
struct Ring {
    /// Entries by ascending sequence.
    entries: VecDeque<Arc<Entry>>,
    /// Bytes of frames held.
    bytes: usize,
    /// The sequence the next entry gets; sequences start at 1, so cursor 0 means
    /// "from the oldest held".
    next: u64,
}

/// A replay ring with its encoder and its readers' wake-up signal.
#[derive(Debug)]
pub struct Hub {
    /// The entries.
    ring: RwLock<Ring>,
    /// The next sequence, published after every append to wake waiting clients.
    head: watch::Sender<u64>,
    /// Limits and the slow-consumer policy.
    config: RingConfig,
    /// Where deliveries are confirmed and the hub's counters live.
    recorder: Arc<Recorder>,
    /// The entrypoint this hub belongs to.
    id: ComponentId,
}

impl Hub {
    /// An empty hub for entrypoint `id`.
    #[must_use]
    pub fn new(config: RingConfig, recorder: Arc<Recorder>, id: ComponentId) -> Self {
        let first = first_sequence();
        Self {
            ring: RwLock::new(Ring { next: first, ..Ring::default() }),
            head: watch::channel(first).0,
            config,
            recorder,
            id,
        }
    }

    /// Counts a client the ring moved past.
    pub fn count_slow_consumer(&self) {
        if let Some(stats) = self.recorder.stats(self.id) {
            stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The slow-consumer policy.
    #[must_use]
    pub fn slow_consumer(&self) -> SlowConsumer {
        self.config.slow_consumer
    }

    /// A receiver that changes whenever entries are appended.
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// The sequence the next entry will get; a client starting "now" reads from here.
    #[must_use]
    pub fn head(&self) -> u64 {
        self.ring.read().unwrap_or_else(PoisonError::into_inner).next
    }

    /// The oldest sequence still held (the head when the ring is empty).
    #[must_use]
    pub fn oldest(&self) -> u64 {
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        ring.entries.front().map_or(ring.next, |e| e.sequence)
    }

    /// Where a client asking for `cursor` continues, and the gap it is told of.
    #[must_use]
    pub fn resume(&self, cursor: u64) -> Resume {
        Self::locate(&self.ring.read().unwrap_or_else(PoisonError::into_inner), cursor)
    }

    /// A cursor from 0 (the oldest held) to the head is held. One below the oldest
    /// that this process issued was evicted, and the distance is what the client
    /// missed. Any other was not issued by this ring (an earlier run, another replica,
    /// or made up): what the client missed is unknown.
    fn locate(ring: &Ring, cursor: u64) -> Resume {
        let oldest = ring.entries.front().map_or(ring.next, |e| e.sequence);
        if cursor == 0 || (oldest..=ring.next).contains(&cursor) {
            Resume::At(cursor)
        } else if (first_sequence()..oldest).contains(&cursor) {
            Resume::Gap { missed: Some(oldest - cursor), oldest }
        } else {
            Resume::Gap { missed: None, oldest }
        }
    }

    /// Appends the entries matching `filter` from `cursor` (0: the oldest held) to
    /// `out`, scanning at most `max` entries.
    pub fn read(&self, cursor: u64, filter: &Filter, max: usize, out: &mut Vec<Arc<Entry>>) -> Read {
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        let oldest = ring.entries.front().map_or(ring.next, |e| e.sequence);
        if let Resume::Gap { missed, oldest } = Self::locate(&ring, cursor) {
            return Read::Expired { oldest, missed };
        }
        let start = ring.entries.partition_point(|e| e.sequence < cursor);
        let mut next = cursor.max(oldest);
        for entry in ring.entries.range(start..).take(max) {
            next = entry.sequence + 1;
            if filter.matches(entry) {
                out.push(Arc::clone(entry));
            }
        }
        Read::Ok { next }
    }

    /// Appends encoded entries, evicting the oldest beyond the limits, and wakes readers.
    fn append(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut ring = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        for entry in entries {
            ring.bytes += entry.frame.len();
            ring.next = entry.sequence + 1;
            ring.entries.push_back(Arc::new(entry));
        }
        let mut evicted = 0;
        while ring.entries.len() > self.config.messages || (ring.bytes > self.config.bytes && ring.entries.len() > 1) {
            if let Some(old) = ring.entries.pop_front() {
                ring.bytes -= old.frame.len();
                evicted += 1;
            }
        }
        let next = ring.next;
        drop(ring);
        if let Some(stats) = self.recorder.stats(self.id) {
            stats.ring_evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        self.head.send_replace(next);
    }

    /// The hub task: encodes what the pipeline delivers, once per event, appends it,
    /// and confirms each delivery once its frame is in the ring and its packet line
    /// was written.
    pub async fn run(self: Arc<Self>, adapter: Adapter, mut queue: TargetReceiver) {
        let recorder = Arc::clone(&self.recorder);
        let mut batch = Vec::with_capacity(self.config.max_batch);
        let mut log = Vec::new();
        let mut acks = Vec::with_capacity(self.config.max_batch);
        while queue.recv_many(&mut batch, self.config.max_batch).await > 0 {
            for (sequence, delivery) in (self.head()..).zip(batch.iter_mut()) {
                delivery.event.sequence = sequence;
            }
            // Filters and targeting look at the event as it came from its source: the
            // encoded frame need not carry its headers or destination.
            let sources: Vec<Source> = batch.iter().map(|d| Source::of(&d.event)).collect();
            let runs = mapping::map_batch(&recorder, Some(&adapter), Direction::Downstream, &mut batch, &mut log);
            for (route, frames) in runs {
                let entries: Vec<Entry> = frames.iter().map(|frame| entry(frame, &sources)).collect();
                self.append(entries);
                acks.extend(frames.into_iter().filter_map(|frame| recorder.delivered(frame, &route, &mut log)));
            }
            // The packet lines go out before the sources hear of the hand-off: a broker
            // message acked because of it always has its `delivered` line, even if the
            // process dies right after.
            recorder.flush(&mut log);
            for ack in acks.drain(..) {
                ack.settle(Ok(()));
            }
        }
    }
}

/// What a client's feed yields next.
#[derive(Debug)]
pub enum Next {
    /// New entries for this client, in order.
    Entries(Vec<Arc<Entry>>),
    /// The ring moved past the client and the policy is `drop_oldest`: it skipped
    /// `missed` events and continues from the oldest held.
    Skipped {
        /// Events the client will never see, when known.
        missed: Option<u64>,
    },
    /// The ring moved past the client and the policy is `disconnect`: close the
    /// connection with a reason; the client resumes from its cursor.
    Behind {
        /// Events no longer held, when known.
        missed: Option<u64>,
    },
    /// The hub stopped (shutdown).
    Closed,
}

/// One client's view of a hub: its cursor and filter.
#[derive(Debug)]
pub struct Feed {
    /// The ring.
    hub: Arc<Hub>,
    /// The next sequence this client reads.
    cursor: u64,
    /// What it receives.
    pub filter: Filter,
    /// Wakes it when entries are appended.
    head: watch::Receiver<u64>,
}

/// Entries scanned per read, bounding how long one client holds the ring's lock.
const FEED_BATCH: usize = 256;

impl Feed {
    /// A feed from `cursor`: 0 is the oldest entry held, [`Hub::head`] is "new events only".
    #[must_use]
    pub fn new(hub: Arc<Hub>, cursor: u64, filter: Filter) -> Self {
        let head = hub.watch();
        Self { hub, cursor, filter, head }
    }

    /// The next sequence this client reads; a reconnecting client passes the last
    /// one it saw (plus one) to resume.
    #[must_use]
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Moves the cursor, for a client that resumes on an open connection.
    pub fn seek(&mut self, cursor: u64) {
        self.cursor = cursor;
    }

    /// Waits for what this client should see next. Cancel-safe: the cursor only
    /// moves when entries are returned.
    pub async fn next(&mut self) -> Next {
        loop {
            self.head.borrow_and_update();
            let mut entries = Vec::new();
            match self.hub.read(self.cursor, &self.filter, FEED_BATCH, &mut entries) {
                Read::Expired { oldest, missed } => {
                    self.hub.count_slow_consumer();
                    if self.hub.slow_consumer() == SlowConsumer::Disconnect {
                        return Next::Behind { missed };
                    }
                    self.cursor = oldest;
                    return Next::Skipped { missed };
                }
                Read::Ok { next } => {
                    self.cursor = next;
                    if !entries.is_empty() {
                        return Next::Entries(entries);
                    }
                }
            }
            if self.head.changed().await.is_err() {
                return Next::Closed;
            }
        }
    }

    /// Resolves once the ring has evicted `sequence`: a client still trying to send
    /// it has fallen behind (it is not reading). Only then does a stalled client cost
    /// anything: until it resolves, nothing is done for it.
    pub async fn overtaken(&self, sequence: u64) {
        let mut head = self.hub.watch();
        while self.hub.oldest() <= sequence {
            if head.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// What an entry keeps of the event it encodes.
struct Source {
    /// The ring sequence, which the adapter keeps on its output.
    sequence: u64,
    /// The event's destination.
    destination: Option<Text>,
    /// The event's headers.
    headers: Vec<Header>,
    /// The event's payload.
    payload: Bytes,
}

impl Source {
    fn of(event: &Event) -> Self {
        Self {
            sequence: event.sequence,
            destination: event.destination.clone(),
            headers: event.headers.clone(),
            payload: event.payload.clone(),
        }
    }
}

/// The ring entry for an encoded frame: the frame, and the destination, headers and
/// payload of the event it encodes.
fn entry(frame: &Event, sources: &[Source]) -> Entry {
    // Sequences are consecutive within a run, so the input is found by position.
    let position = sources.first().and_then(|first| usize::try_from(frame.sequence.checked_sub(first.sequence)?).ok());
    let source = position.and_then(|p| sources.get(p)).filter(|s| s.sequence == frame.sequence);
    Entry {
        sequence: frame.sequence,
        frame: frame.payload.clone(),
        binary: frame.flags & mediation_adapter_sdk::layout::FLAG_BINARY != 0,
        destination: source.and_then(|s| s.destination.clone()),
        headers: source.map(|s| s.headers.clone()).unwrap_or_default(),
        payload: source.map(|s| s.payload.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(messages: usize, bytes: usize) -> Hub {
        let mut components = crate::routing::Components::default();
        components.add("feed", crate::routing::Side::Entrypoint);
        let log = Arc::new(crate::packet_log::PacketLog::new(
            &crate::config::PacketLogConfig::default(),
            crate::packet_log::Sink::Discard,
        ));
        let recorder = Arc::new(Recorder::new(Arc::new(components), log));
        Hub::new(RingConfig { messages, bytes, ..RingConfig::default() }, recorder, ComponentId(0))
    }

    fn put(hub: &Hub, topic: &str, frame: &'static str, headers: Vec<Header>) {
        let sequence = hub.head();
        hub.append([Entry {
            sequence,
            frame: Bytes::from_static(frame.as_bytes()),
            binary: false,
            destination: Some(Text::from(topic)),
            headers,
            payload: Bytes::new(),
        }]);
    }

    fn frames(hub: &Hub, cursor: u64, filter: &Filter) -> (Vec<&'static str>, Read) {
        let mut out = Vec::new();
        let read = hub.read(cursor, filter, 100, &mut out);
        let frames = out
            .iter()
            .map(|e| {
                if e.frame == "a" {
                    "a"
                } else if e.frame == "b" {
                    "b"
                } else {
                    "c"
                }
            })
            .collect();
        (frames, read)
    }

    #[test]
    fn topic_patterns() {
        for (pattern, topic, expected) in [
            ("chat", "chat", true),
            ("chat", "chat/room", false),
            ("chat/*", "chat/room", true),
            ("chat/*", "chat", false),
            ("chat/*/typing", "chat/r1/typing", true),
            ("chat/#", "chat", true),
            ("chat/#", "chat/a/b/c", true),
            ("#", "anything/at/all", true),
            ("*/x", "a/y", false),
        ] {
            assert_eq!(topic_matches(pattern, topic), expected, "{pattern} vs {topic}");
        }
    }

    #[test]
    fn reads_from_a_cursor_with_filters_and_targets() {
        let hub = hub(100, 1 << 20);
        put(&hub, "chat/1", "a", vec![]);
        put(&hub, "news", "b", vec![Header::new("lang", "en")]);
        put(&hub, "chat/2", "c", vec![Header::new(TARGET_CLIENT_HEADER, "alice")]);
        let everyone = Filter::default();
        let first = hub.oldest();
        let end = first + 3;
        assert_eq!(frames(&hub, 0, &everyone), (vec!["a", "b"], Read::Ok { next: end }), "targeted events skip others");
        assert_eq!(frames(&hub, first + 1, &everyone), (vec!["b"], Read::Ok { next: end }));
        assert_eq!(frames(&hub, end, &everyone), (vec![], Read::Ok { next: end }), "nothing new at the head");
        assert_eq!(
            frames(&hub, end + 1, &everyone).1,
            Read::Expired { oldest: first, missed: None },
            "not from this ring"
        );
        let alice =
            Filter { client_id: String::from("alice"), topics: vec![String::from("chat/*")], ..Filter::default() };
        assert_eq!(frames(&hub, 0, &alice).0, vec!["a", "c"]);
        let english = Filter { headers: vec![(String::from("lang"), Bytes::from_static(b"en"))], ..Filter::default() };
        assert_eq!(frames(&hub, 0, &english).0, vec!["b"]);
    }

    #[test]
    fn evicts_by_count_and_bytes_and_says_what_a_cursor_missed() {
        let hub = hub(2, 1 << 20);
        for _ in 0..5 {
            put(&hub, "t", "a", vec![]);
        }
        let evicted = hub.recorder.stats(ComponentId(0)).map(|s| s.ring_evictions.load(Ordering::Relaxed));
        assert_eq!(evicted, Some(3));
        let oldest = hub.oldest();
        assert_eq!(frames(&hub, oldest - 3, &Filter::default()).1, Read::Expired { oldest, missed: Some(3) });
        assert_eq!(frames(&hub, oldest, &Filter::default()), (vec!["a", "a"], Read::Ok { next: oldest + 2 }));

        let small = hub_with_bytes(2);
        for _ in 0..3 {
            put(&small, "t", "a", vec![]);
        }
        assert_eq!(frames(&small, 0, &Filter::default()).0.len(), 2, "two one-byte frames fit in two bytes");
    }

    fn hub_with_bytes(bytes: usize) -> Hub {
        hub(100, bytes)
    }
}
