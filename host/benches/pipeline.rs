//! The cost of the core data path, per event: the bus and the pipeline (native
//! pass-through), the heap allocations on that path, the WebAssembly adapter boundary
//! at batch sizes 1, 16 and 256 against a native pass-through of the same batch
//! conversion, and one packet log line.
//!
//! Every event carries a 100-byte payload and 2 headers. Each benchmark counts one
//! criterion iteration as one event, so the `time` criterion prints is the time per
//! event (per line for the packet log). Allocation counts are printed as
//! `allocations per event` lines after the timings.
//!
//! ```text
//! CARGO_TARGET_DIR=$HOME/.cache/mediation-host/target cargo bench -p mediation-host --bench pipeline
//! ```
//!
//! Results and targets are recorded in `docs/benchmarks.md`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion};
use mediation_adapter_sdk::{Batch, BatchBuilder};
use mediation_host::adapter::{Adapter, AdapterRuntime, AdapterSource, Role, encode_events, from_item, route_context};
use mediation_host::bus::Bus;
use mediation_host::config::{AdapterRuntimeConfig, BusConfig, PacketLogConfig};
use mediation_host::event::{Event, Header, Text};
use mediation_host::metrics::Outcome;
use mediation_host::packet_log::{Packet, PacketLog, Sink};
use mediation_host::pipeline::{Pipeline, Recorder, TargetReceiver};
use mediation_host::routing::{ComponentId, Components, Direction, Route, RouteConfig, RouteTable, Routes, Side};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The payload of every event: 100 bytes of JSON-ish text.
const PAYLOAD: &[u8; 100] =
    br#"{"order":"0123456789","customer":"c-0042","amount":12.50,"currency":"EUR","note":"bench-payload-xy"}"#;
/// Distinct ordering keys, as if this many client connections published at once.
const ORDERING_KEYS: u64 = 64;
/// Events published per round before waiting for all of them to be delivered.
const ROUND_EVENTS: u64 = 10_000;
/// The most input events prepared ahead of one timed stretch of adapter calls.
const CHUNK_EVENTS: usize = 4096;
/// Batch sizes of the adapter benchmarks.
const BATCH_SIZES: [usize; 3] = [1, 16, 256];

// ---------------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------------

/// Heap allocations (alloc, alloc_zeroed, realloc) made while [`COUNTING`] is on.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Counting is off during the timed benchmarks, so they pay one relaxed load only.
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting the allocations made through it.
struct CountingAllocator;

fn count_allocation() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// `GlobalAlloc` is an unsafe trait, so implementing it needs `unsafe`. Every method
// forwards its arguments unchanged to `System`, which upholds the trait's contract;
// the only addition is a counter.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller's guarantees for `layout` are passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The heap allocations `work` makes, on any thread, while it runs.
fn allocations_during(work: impl FnOnce()) -> u64 {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    work();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

fn ratio(allocations: u64, events: u64) -> f64 {
    allocations as f64 / events as f64
}

// ---------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------

/// One event as an entrypoint makes it: a fresh id, a 100-byte payload in its own
/// buffer (one allocation) and 2 headers (one allocation for the `Vec`; names and
/// values are static, as they are when they point into a shared request or adapter
/// output buffer).
fn event(source: ComponentId, ordering_key: u64) -> Event {
    let mut e = Event::new(source, Bytes::copy_from_slice(PAYLOAD));
    e.ordering_key = ordering_key;
    e.headers = vec![
        Header::new(Text::from_static("content-type"), Bytes::from_static(b"application/json")),
        Header::new(Text::from_static("x-trace"), Bytes::from_static(b"trace-0123456789")),
    ];
    e
}

fn events(n: usize) -> Vec<Event> {
    (0..n as u64).map(|i| event(ComponentId(0), i % ORDERING_KEYS)).collect()
}

// ---------------------------------------------------------------------------------
// Bus + pipeline
// ---------------------------------------------------------------------------------

/// A bus, two pipeline workers and one target task wired as the host wires them, on
/// a 2-worker multi-thread runtime.
struct PipelineBench {
    /// Runs the workers, the target and the publishers.
    runtime: tokio::runtime::Runtime,
    /// Where events are published.
    bus: Bus,
    /// The entrypoint the events come from.
    source: ComponentId,
    /// Deliveries the target has recorded so far.
    delivered: Arc<AtomicU64>,
    /// The delivery count the current round waits for.
    goal: Arc<AtomicU64>,
    /// Wakes the round once `delivered` reaches `goal`.
    reached: Arc<Notify>,
    /// Events published so far.
    published: u64,
    /// The packet log's memory sink, emptied between rounds; `None` when discarded.
    memory: Option<Arc<Mutex<Vec<u8>>>>,
    /// Stops the workers when the benchmark is done.
    stop: CancellationToken,
}

impl PipelineBench {
    fn new(packet_log_on: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut components = Components::default();
        let source = components.add("ingest", Side::Entrypoint);
        let target = components.add("orders", Side::Endpoint);
        let components = Arc::new(components);
        let route = RouteConfig { source: String::from("ingest"), target: String::from("orders"), direction: None };
        let table = RouteTable::build(&components, &[route], None).expect("a valid route");
        let routes = Arc::new(Routes::new(table));
        let memory = packet_log_on.then(|| Arc::new(Mutex::new(Vec::with_capacity(8 << 20))));
        let sink = memory.as_ref().map_or(Sink::Discard, |m| Sink::Memory(Arc::clone(m)));
        let packet_log = Arc::new(PacketLog::new(&PacketLogConfig::default(), sink));
        let recorder = Arc::new(Recorder::new(Arc::clone(&components), packet_log));
        let bus_config = BusConfig { shards: 2, ..BusConfig::default() };
        let (bus, shards) = Bus::new(&bus_config);
        // The memory endpoint's default queue capacity.
        let (target_tx, target_rx) = tokio::sync::mpsc::channel(1024);
        let mut targets = vec![None; components.len()];
        targets[target.0 as usize] = Some(target_tx);
        let pipeline =
            Pipeline::new(routes, targets, Arc::clone(&recorder), Duration::from_millis(bus_config.publish_timeout_ms));
        let stop = CancellationToken::new();
        let delivered = Arc::new(AtomicU64::new(0));
        let goal = Arc::new(AtomicU64::new(u64::MAX));
        let reached = Arc::new(Notify::new());
        {
            let _entered = runtime.enter();
            for shard in shards {
                tokio::spawn(pipeline.clone().run_shard(shard, stop.clone()));
            }
            let counters = (Arc::clone(&delivered), Arc::clone(&goal), Arc::clone(&reached));
            tokio::spawn(confirm_deliveries(target_rx, recorder, counters));
        }
        Self { runtime, bus, source, delivered, goal, reached, published: 0, memory, stop }
    }

    /// Publishes `events` events in rounds of [`ROUND_EVENTS`], waiting after each
    /// round until the target has recorded every one; returns the time.
    fn run(&mut self, events: u64, publishers: Publishers) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut left = events;
        while left > 0 {
            let round = left.min(ROUND_EVENTS);
            left -= round;
            let first = self.published;
            self.published += round;
            let goal = self.published;
            self.goal.store(goal, Ordering::SeqCst);
            let source = self.source;
            let premade: Vec<Event> = match publishers {
                Publishers::Premade => (first..goal).map(|i| event(source, i % ORDERING_KEYS)).collect(),
                Publishers::Creating(_) => Vec::new(),
            };
            let (delivered, reached) = (Arc::clone(&self.delivered), Arc::clone(&self.reached));
            let bus = self.bus.clone();
            let started = Instant::now();
            self.runtime.block_on(async move {
                // Publishers run on the workers, as entrypoints' connection tasks do.
                let tasks: Vec<_> = match publishers {
                    Publishers::Premade => vec![tokio::spawn(async move {
                        for e in premade {
                            bus.publish(e).await.expect("the bus accepts the event");
                        }
                    })],
                    Publishers::Creating(n) => (0..n)
                        .map(|p| {
                            let bus = bus.clone();
                            tokio::spawn(async move {
                                let stride = usize::try_from(n).unwrap_or(1);
                                for i in (first + p..goal).step_by(stride) {
                                    let e = event(source, i % ORDERING_KEYS);
                                    bus.publish(e).await.expect("the bus accepts the event");
                                }
                            })
                        })
                        .collect(),
                };
                for task in tasks {
                    task.await.expect("the publisher finishes");
                }
                while delivered.load(Ordering::SeqCst) < goal {
                    reached.notified().await;
                }
            });
            elapsed += started.elapsed();
            if let Some(memory) = &self.memory {
                // Keeps the capacity: later rounds append without growing it.
                memory.lock().unwrap_or_else(PoisonError::into_inner).clear();
            }
        }
        elapsed
    }
}

/// Who makes the events and publishes them.
#[derive(Debug, Clone, Copy)]
enum Publishers {
    /// This many tasks, each making its events just before publishing them, as
    /// entrypoint connections do; together they publish every round's events.
    Creating(u64),
    /// One task publishing events made before the clock starts: the cost of the bus,
    /// the pipeline and the delivery alone.
    Premade,
}

impl Drop for PipelineBench {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The target's task: takes what is queued, records each delivery as confirmed
/// (counters, packet line, acknowledgement) and flushes the packet lines, as an
/// endpoint does once its broker confirmed.
async fn confirm_deliveries(
    mut queue: TargetReceiver,
    recorder: Arc<Recorder>,
    (delivered, goal, reached): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<Notify>),
) {
    let mut batch = Vec::with_capacity(256);
    let mut log = Vec::new();
    loop {
        let n = queue.recv_many(&mut batch, 256).await;
        if n == 0 {
            return;
        }
        for delivery in batch.drain(..) {
            recorder.finish(delivery.event, &delivery.route, Ok(()), &mut log);
        }
        recorder.flush(&mut log);
        let total = delivered.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        if total >= goal.load(Ordering::SeqCst) {
            reached.notify_one();
        }
    }
}

/// What making an event costs, as part of the pipeline number: the id (a UUIDv7,
/// whose random bits `uuid` reads from the OS on every call) and the event itself.
fn event_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("event");
    group.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("uuid-now-v7", |b| b.iter(uuid::Uuid::now_v7));
    group.bench_function("create-and-drop", |b| b.iter(|| event(ComponentId(0), black_box(7))));
    group.finish();
}

fn pipeline_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let variants = [
        ("1-publisher-creating/packet-log-discard", false, Publishers::Creating(1)),
        ("1-publisher-creating/packet-log-memory", true, Publishers::Creating(1)),
        ("2-publishers-creating/packet-log-discard", false, Publishers::Creating(2)),
        ("2-publishers-creating/packet-log-memory", true, Publishers::Creating(2)),
        ("premade-events/packet-log-discard", false, Publishers::Premade),
    ];
    for (name, packet_log_on, publishers) in variants {
        let mut bench = PipelineBench::new(packet_log_on);
        group.bench_function(name, |b| b.iter_custom(|events| bench.run(events, publishers)));
    }
    group.finish();
}

// ---------------------------------------------------------------------------------
// Adapters
// ---------------------------------------------------------------------------------

/// Maps `events` through a batch of `batch` events at a time, `map` being one call,
/// and returns the time `events` events take. Inputs are made before the clock
/// starts and outputs are dropped after it stops, so only the mapping is timed.
fn time_batches(events: u64, batch: usize, map: &mut impl FnMut(Vec<Event>) -> Vec<Event>) -> Duration {
    if events == 0 {
        return Duration::ZERO;
    }
    let batches = usize::try_from(events).unwrap_or(usize::MAX).div_ceil(batch);
    let per_chunk = (CHUNK_EVENTS / batch).max(1);
    let mut elapsed = Duration::ZERO;
    let mut left = batches;
    while left > 0 {
        let n = left.min(per_chunk);
        left -= n;
        let inputs: Vec<Vec<Event>> = (0..n).map(|_| self::events(batch)).collect();
        let mut outputs = Vec::with_capacity(n);
        let started = Instant::now();
        for input in inputs {
            outputs.push(map(input));
        }
        elapsed += started.elapsed();
        black_box(&outputs);
    }
    // Whole batches ran; scale to the events criterion asked for.
    let ran = (batches * batch) as u64;
    elapsed.mul_f64(events as f64 / ran as f64)
}

/// `Adapter::map` upstream on route 0, checking that every event came through.
fn wasm_map(adapter: &Adapter) -> impl FnMut(Vec<Event>) -> Vec<Event> + '_ {
    move |inputs| {
        let n = inputs.len();
        let mapped = adapter.map(Direction::Upstream, &route_context(0), inputs);
        assert!(mapped.failed.is_none(), "the adapter call fails: {:?}", mapped.failed.map(|(_, e)| e));
        assert_eq!(mapped.outputs.len(), n, "every event maps to one output");
        mapped.outputs
    }
}

/// The same conversion `Adapter::map` does, with a native pass-through in place of
/// the guest: events into a batch (as the host builds it), the guest SDK's loop
/// (parse, copy each item, count outputs), then the output batch back into events
/// (as the host reads it). What remains between this and `wasm_map` is the
/// WebAssembly call: copying the batch in and out, and running the guest code.
fn native_map(inputs: Vec<Event>) -> Vec<Event> {
    // Host: encode, sized as `Adapter::map` sizes it.
    let bytes = inputs.iter().map(Event::size).sum::<usize>() + inputs.len() * 64;
    let mut builder = BatchBuilder::with_capacity(inputs.len(), bytes);
    encode_events(&inputs, &mut builder);
    let (data, index) = builder.into_parts();
    // Guest: `mediation_adapter_sdk::guest::run` with a pass-through adapter.
    let input = Batch::parse(&data, &index).expect("the host's batch parses");
    let mut out = BatchBuilder::with_capacity(index.len() / mediation_adapter_sdk::layout::ITEM_WORDS, data.len());
    let mut produced = Vec::with_capacity(input.len());
    for item in input.iter() {
        let before = out.len();
        out.copy(&item);
        produced.push(u32::try_from(out.len() - before).unwrap_or(u32::MAX));
    }
    let (data, index) = out.into_parts();
    // Host: read the output back into events sharing its buffer.
    let shared = Bytes::from(data);
    let output = Batch::parse(&shared, &index).expect("the output parses");
    assert_eq!(produced.iter().map(|&p| p as usize).sum::<usize>(), output.len());
    inputs.iter().zip(output.iter()).map(|(parent, item)| from_item(&item, &shared, parent)).collect()
}

/// The builtin Kafka adapter (topic `bench`) and the test guest that passes items
/// through unchanged.
fn adapters() -> (Adapter, Adapter) {
    let runtime = AdapterRuntime::new(&AdapterRuntimeConfig::default()).expect("the adapter runtime starts");
    let settings = BTreeMap::from([(String::from("topic"), String::from("bench"))]);
    let kafka = runtime
        .load("kafka", &AdapterSource::Builtin(String::from("kafka")), Role::Endpoint, &settings)
        .expect("the kafka adapter loads");
    let passthrough = AdapterSource::File(PathBuf::from(env!("MEDIATION_MISBEHAVE_ADAPTER")));
    let passthrough = runtime
        .load("passthrough", &passthrough, Role::Endpoint, &BTreeMap::new())
        .expect("the pass-through adapter loads");
    (kafka, passthrough)
}

fn adapter_benches(c: &mut Criterion, kafka: &Adapter, passthrough: &Adapter) {
    let mut group = c.benchmark_group("adapter");
    group.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for batch in BATCH_SIZES {
        group.bench_function(BenchmarkId::new("native-passthrough", batch), |b| {
            b.iter_custom(|events| time_batches(events, batch, &mut native_map));
        });
        group.bench_function(BenchmarkId::new("wasm-passthrough", batch), |b| {
            b.iter_custom(|events| time_batches(events, batch, &mut wasm_map(passthrough)));
        });
        group.bench_function(BenchmarkId::new("wasm-kafka", batch), |b| {
            b.iter_custom(|events| time_batches(events, batch, &mut wasm_map(kafka)));
        });
    }
    // The call alone on a batch the host already built, the output left unread: the
    // part of `map` that crosses the boundary and runs the guest.
    for batch in BATCH_SIZES {
        let mut builder = BatchBuilder::default();
        encode_events(&events(batch), &mut builder);
        let (data, index) = builder.into_parts();
        group.bench_function(BenchmarkId::new("wasm-passthrough-call-only", batch), |b| {
            b.iter_custom(|events| {
                let calls = usize::try_from(events).unwrap_or(usize::MAX).div_ceil(batch);
                let inputs: Vec<_> = (0..calls).map(|_| (data.clone(), index.clone())).collect();
                let started = Instant::now();
                for (data, index) in inputs {
                    let output = passthrough.call(Direction::Upstream, &route_context(0), data, index);
                    black_box(output.expect("the call succeeds"));
                }
                started.elapsed().mul_f64(events as f64 / (calls * batch) as f64)
            });
        });
    }
    // An empty batch: the fixed cost of one call (pool, deadline, lowering two lists,
    // the guest's loop over nothing, lifting the result).
    let (data, index) = BatchBuilder::default().into_parts();
    group.bench_function("wasm-empty-call", |b| {
        b.iter(|| {
            let output = passthrough.call(Direction::Upstream, &route_context(0), data.clone(), index.clone());
            black_box(output.expect("the call succeeds"))
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------------
// Packet log
// ---------------------------------------------------------------------------------

fn packet_log_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("packet-log");
    group.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let route = Route {
        index: 0,
        source: ComponentId(0),
        target: ComponentId(1),
        direction: Direction::Upstream,
        label: Arc::from("ingest->orders"),
        stats: Arc::default(),
    };
    let mut e = event(ComponentId(0), 7);
    e.client_id = Some(Text::from("client-0042"));
    e.destination = Some(Text::from("orders"));
    let packet = Packet {
        event: &e,
        source: "ingest",
        route: Some(&route),
        target: Some("orders"),
        outcome: Outcome::Delivered,
        error: None,
    };
    let with_headers = PacketLogConfig { include_headers: true, ..PacketLogConfig::default() };
    for (name, config) in [("line", PacketLogConfig::default()), ("line-with-headers", with_headers)] {
        // An enabled sink; the buffer is cleared before each line, so nothing is flushed.
        let log = PacketLog::new(&config, Sink::Memory(Arc::default()));
        let mut buf = Vec::with_capacity(1024);
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                log.record(&mut buf, black_box(&packet));
                black_box(buf.len())
            });
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------
// Allocation counts
// ---------------------------------------------------------------------------------

fn report_allocations(kafka: &Adapter, passthrough: &Adapter) {
    const EVENTS: u64 = 50_000;
    println!("size of an event: {} bytes (moved, not copied on the heap, at each hand-over)", size_of::<Event>());
    let created = allocations_during(|| {
        for i in 0..EVENTS {
            black_box(event(ComponentId(0), i % ORDERING_KEYS));
        }
    });
    println!("allocations per event: creating the event (payload Bytes + headers Vec): {:.2}", ratio(created, EVENTS));
    for (name, packet_log_on) in [("packet log discarded", false), ("packet log to memory", true)] {
        let mut bench = PipelineBench::new(packet_log_on);
        // Warm up: queues, buffers and the sink reach their steady-state capacity.
        bench.run(3 * ROUND_EVENTS, Publishers::Creating(1));
        let total = allocations_during(|| {
            bench.run(EVENTS, Publishers::Creating(1));
        });
        println!(
            "allocations per event: create + publish + pipeline + target delivery ({name}): {:.2} \
             (of which the pipeline: {:.2})",
            ratio(total, EVENTS),
            ratio(total.saturating_sub(created), EVENTS)
        );
    }
    for batch in BATCH_SIZES {
        let batches = (EVENTS as usize / batch).clamp(16, 2048);
        let inputs: Vec<Vec<Event>> = (0..batches).map(|_| events(batch)).collect();
        let mut outputs = Vec::with_capacity(batches);
        let counted = (batches * batch) as u64;
        let native = allocations_during(|| outputs.extend(inputs.into_iter().map(native_map)));
        outputs.clear();
        let mut counts = Vec::new();
        for adapter in [passthrough, kafka] {
            let inputs: Vec<Vec<Event>> = (0..batches).map(|_| events(batch)).collect();
            let mut map = wasm_map(adapter);
            counts.push(allocations_during(|| outputs.extend(inputs.into_iter().map(&mut map))));
            outputs.clear();
        }
        println!(
            "allocations per event: adapter map at batch {batch}: native pass-through {:.2}, \
             wasm pass-through {:.2}, wasm kafka {:.2}",
            ratio(native, counted),
            ratio(counts[0], counted),
            ratio(counts[1], counted)
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    event_benches(&mut c);
    pipeline_benches(&mut c);
    let (kafka, passthrough) = adapters();
    adapter_benches(&mut c, &kafka, &passthrough);
    packet_log_benches(&mut c);
    report_allocations(&kafka, &passthrough);
    c.final_summary();
}
