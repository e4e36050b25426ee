//! The pipeline each bus worker runs: lifecycle → route → deliver, with the packet
//! log written once a delivery has its outcome.
//!
//! "Deliver" hands the event to the target's bounded queue. The target (an endpoint
//! task, an entrypoint hub) confirms later and records the outcome through the same
//! [`Recorder`], so the packet log and the sender's acknowledgement both wait for the
//! real confirmation, while the worker moves on to the next event.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio_util::sync::CancellationToken;

use crate::event::{Ack, DeliveryError, Event, EventKind};
use crate::metrics::{ComponentStats, Outcome};
use crate::packet_log::{Packet, PacketLog};
use crate::routing::{ComponentId, Components, Route, RouteTable, Routes};

/// Events a worker takes from its shard at once. Bounds the time one route snapshot
/// is held and how many packet lines are written per flush.
const WORKER_BATCH: usize = 128;

/// One event on its way to one target.
#[derive(Debug)]
pub struct Delivery {
    /// The event; for fan-out, one copy per target.
    pub event: Event,
    /// The route it travels on.
    pub route: Arc<Route>,
}

/// The sending side of a target's queue.
pub type TargetSender = mpsc::Sender<Delivery>;
/// The receiving side, owned by the target's task.
pub type TargetReceiver = mpsc::Receiver<Delivery>;

/// Records how deliveries ended: route counters, the packet log, and the sender's
/// acknowledgement. Shared by the pipeline and every target.
#[derive(Debug)]
pub struct Recorder {
    /// Component names, for the packet log.
    components: Arc<Components>,
    /// Per-component counters, indexed by [`ComponentId`].
    stats: Arc<[ComponentStats]>,
    /// The packet log.
    packet_log: Arc<PacketLog>,
    /// Client connections closed because they stopped taking bytes, on every
    /// entrypoint listener.
    write_timeouts: Arc<std::sync::atomic::AtomicU64>,
}

impl Recorder {
    /// A recorder over `components`, writing to `packet_log`.
    #[must_use]
    pub fn new(components: Arc<Components>, packet_log: Arc<PacketLog>) -> Self {
        let stats = (0..components.len()).map(|_| ComponentStats::default()).collect();
        Self { components, stats, packet_log, write_timeouts: Arc::default() }
    }

    /// The count of client connections closed by the write timeout, which the
    /// listeners add to.
    #[must_use]
    pub fn write_timeouts(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.write_timeouts)
    }

    /// The component registry.
    #[must_use]
    pub fn components(&self) -> &Components {
        &self.components
    }

    /// The counters of component `id`.
    #[must_use]
    pub fn stats(&self, id: ComponentId) -> Option<&ComponentStats> {
        self.stats.get(id.0 as usize)
    }

    /// Records the outcome of delivering `event` on `route`, appends its packet line
    /// to `log` and settles its acknowledgement.
    pub fn finish(&self, mut event: Event, route: &Route, result: Result<(), DeliveryError>, log: &mut Vec<u8>) {
        self.record(&event, route, result.as_ref().err(), log);
        event.settle(result);
    }

    /// Records a successful delivery of `event` on `route` like [`Recorder::finish`],
    /// but returns its acknowledgement unsettled, for a target that settles only after
    /// its packet lines were written (see [`Recorder::flush`]).
    pub fn delivered(&self, mut event: Event, route: &Route, log: &mut Vec<u8>) -> Option<Ack> {
        self.record(&event, route, None, log);
        event.ack.take()
    }

    /// Counts the outcome (success without `error`) and appends the packet line.
    fn record(&self, event: &Event, route: &Route, error: Option<&DeliveryError>, log: &mut Vec<u8>) {
        let outcome = error.map_or(Outcome::Delivered, DeliveryError::outcome);
        route.stats.record(outcome);
        if outcome == Outcome::Delivered {
            route.stats.latency.observe(event.received_at.elapsed());
        }
        let packet = Packet {
            event,
            source: self.components.name(route.source),
            route: Some(route),
            target: Some(self.components.name(route.target)),
            outcome,
            error,
        };
        self.packet_log.record(log, &packet);
    }

    /// Records an event that no route took.
    pub fn unrouted(&self, mut event: Event, log: &mut Vec<u8>) {
        if let Some(stats) = self.stats(event.source) {
            stats.unrouted.fetch_add(1, Ordering::Relaxed);
        }
        let source = self.components.name(event.source);
        let error = DeliveryError::NoRoute(source.to_owned());
        let packet =
            Packet { event: &event, source, route: None, target: None, outcome: Outcome::NoRoute, error: Some(&error) };
        self.packet_log.record(log, &packet);
        event.settle(Err(error));
    }

    /// Writes out the packet lines gathered in `log`.
    pub fn flush(&self, log: &mut Vec<u8>) {
        self.packet_log.flush(log);
    }
}

/// What every bus worker shares.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The live route table.
    routes: Arc<Routes>,
    /// Each component's queue, indexed by [`ComponentId`]; `None` for a component
    /// that takes no deliveries.
    targets: Arc<[Option<TargetSender>]>,
    /// Outcomes, counters and the packet log.
    recorder: Arc<Recorder>,
    /// How long delivery waits for room in a target's queue before it fails as busy.
    publish_timeout: Duration,
}

impl Pipeline {
    /// A pipeline over `routes`, delivering to `targets`.
    #[must_use]
    pub fn new(
        routes: Arc<Routes>,
        targets: Vec<Option<TargetSender>>,
        recorder: Arc<Recorder>,
        publish_timeout: Duration,
    ) -> Self {
        Self { routes, targets: targets.into(), recorder, publish_timeout }
    }

    /// Runs one bus shard until `stop` (the sources' shutdown stage), then closes the
    /// shard, drains what is queued and returns. Publishing to a closed shard fails
    /// with `Closed`, which senders see as "shutting down".
    pub async fn run_shard(self, mut shard: mpsc::Receiver<Event>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(WORKER_BATCH);
        let mut log = Vec::new();
        loop {
            let taken = tokio::select! {
                biased;
                n = shard.recv_many(&mut batch, WORKER_BATCH) => n,
                () = stop.cancelled() => {
                    shard.close();
                    shard.recv_many(&mut batch, WORKER_BATCH).await
                }
            };
            if taken == 0 {
                break;
            }
            let table = self.routes.snapshot();
            for event in batch.drain(..) {
                // The target's outcome is recorded and reaches the sender through its
                // acknowledgement; the worker only moves on.
                let _ = self.process(&table, event, &mut log).await;
            }
            self.recorder.flush(&mut log);
        }
    }

    /// Runs one event through lifecycle → route → deliver. Returns why a target did
    /// not take it (the delivery is recorded as failed either way), for a source that
    /// runs its own deliveries and answers for them ([`Pipeline::forward`]).
    pub async fn process(&self, table: &RouteTable, event: Event, log: &mut Vec<u8>) -> Result<(), DeliveryError> {
        if event.kind.is_lifecycle() {
            self.lifecycle(&event);
            return Ok(());
        }
        let Some((last, rest)) = table.from_source(event.source).split_last() else {
            self.recorder.unrouted(event, log);
            return Ok(());
        };
        let mut outcome = Ok(());
        for route in rest {
            let delivered = self.deliver(route, event.clone(), log).await;
            outcome = outcome.and(delivered);
        }
        outcome.and(self.deliver(last, event, log).await)
    }

    /// Delivers `event` on the current routes from its source, the way a bus worker
    /// would. For a source that needs no bus because it runs in the host and is fed
    /// by the pipeline itself (the memory topic): going through the bus would make a
    /// worker wait on the topic's queue while the topic waits on that worker's shard.
    ///
    /// # Errors
    /// Why a target did not take it (busy, shutting down).
    pub async fn forward(&self, event: Event, log: &mut Vec<u8>) -> Result<(), DeliveryError> {
        let table = self.routes.snapshot();
        self.process(&table, event, log).await
    }

    /// Connects and disconnects are counted and logged, then end the pipeline
    /// normally: they are not failures and no route sees them.
    fn lifecycle(&self, event: &Event) {
        let Some(stats) = self.recorder.stats(event.source) else {
            return;
        };
        let counter = if event.kind == EventKind::Connect { &stats.connects } else { &stats.disconnects };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            source = self.recorder.components().name(event.source),
            client_id = event.client_id.as_ref().map(|c| c.as_str()),
            kind = ?event.kind,
            "client lifecycle"
        );
    }

    async fn deliver(&self, route: &Arc<Route>, event: Event, log: &mut Vec<u8>) -> Result<(), DeliveryError> {
        let Some(Some(queue)) = self.targets.get(route.target.0 as usize) else {
            let target = self.recorder.components().name(route.target).to_owned();
            let error = DeliveryError::Target { target, message: String::from("takes no deliveries") };
            return self.fail(event, route, error, log);
        };
        let delivery = Delivery { event, route: Arc::clone(route) };
        let delivery = match queue.try_send(delivery) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(delivery)) => delivery,
            Err(TrySendError::Closed(delivery)) => {
                return self.fail(delivery.event, &delivery.route, DeliveryError::ShuttingDown, log);
            }
        };
        // Lines gathered so far go out now rather than after a wait of up to the
        // publish timeout.
        self.recorder.flush(log);
        match queue.send_timeout(delivery, self.publish_timeout).await {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(delivery)) => {
                let target = self.recorder.components().name(delivery.route.target).to_owned();
                self.fail(delivery.event, &delivery.route, DeliveryError::Busy(target), log)
            }
            Err(SendTimeoutError::Closed(delivery)) => {
                self.fail(delivery.event, &delivery.route, DeliveryError::ShuttingDown, log)
            }
        }
    }

    /// Records a delivery that failed before its target took it, and returns why.
    fn fail(&self, event: Event, route: &Route, error: DeliveryError, log: &mut Vec<u8>) -> Result<(), DeliveryError> {
        self.recorder.finish(event, route, Err(error.clone()), log);
        Err(error)
    }
}

/// Hands the pipeline to the components that deliver for themselves (the memory
/// topic), once every target is wired: the pipeline holds every target's queue, so it
/// only exists after all components were built. Each gets its own clone and drops it
/// at shutdown, so that no queue is kept open by a reference nobody can drop.
#[derive(Debug, Clone, Default)]
pub struct PipelineHandOff(Arc<std::sync::Mutex<Vec<tokio::sync::oneshot::Sender<Pipeline>>>>);

impl PipelineHandOff {
    /// The pipeline, once the host has built it; an error when the host did not start.
    #[must_use]
    pub fn request(&self) -> tokio::sync::oneshot::Receiver<Pipeline> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(tx);
        rx
    }

    /// Gives every requester its clone of `pipeline`.
    pub fn fulfil(&self, pipeline: &Pipeline) {
        for requester in self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
            // A requester that is gone wants nothing.
            let _ = requester.send(pipeline.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;
    use crate::config::{BusConfig, PacketLogConfig};
    use crate::event::Ack;
    use crate::packet_log::Sink;
    use crate::routing::{RouteConfig, Side};
    use bytes::Bytes;
    use std::sync::Mutex;

    struct Rig {
        bus: Bus,
        packets: Arc<Mutex<Vec<u8>>>,
        recorder: Arc<Recorder>,
        stop: CancellationToken,
        workers: Vec<tokio::task::JoinHandle<()>>,
    }

    /// `ws` and `sse` are entrypoints, `a` and `b` endpoints; `ws` fans out to both.
    fn rig(capacity: usize, publish_timeout_ms: u64) -> (Rig, TargetReceiver, TargetReceiver) {
        let mut components = Components::default();
        for (name, side) in
            [("ws", Side::Entrypoint), ("sse", Side::Entrypoint), ("a", Side::Endpoint), ("b", Side::Endpoint)]
        {
            components.add(name, side);
        }
        let components = Arc::new(components);
        let routes = ["a", "b"].map(|t| RouteConfig { source: "ws".into(), target: t.into(), direction: None });
        let table = RouteTable::build(&components, &routes, None).expect("valid routes");
        let packets = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(PacketLog::new(&PacketLogConfig::default(), Sink::Memory(Arc::clone(&packets))));
        let recorder = Arc::new(Recorder::new(Arc::clone(&components), log));
        let (a_tx, a_rx) = mpsc::channel(capacity);
        let (b_tx, b_rx) = mpsc::channel(capacity);
        let pipeline = Pipeline::new(
            Arc::new(Routes::new(table)),
            vec![None, None, Some(a_tx), Some(b_tx)],
            Arc::clone(&recorder),
            Duration::from_millis(publish_timeout_ms),
        );
        let (bus, shards) = Bus::new(&BusConfig { shards: 2, queue_capacity: 64, publish_timeout_ms: 1000 });
        let stop = CancellationToken::new();
        let workers = shards.into_iter().map(|s| tokio::spawn(pipeline.clone().run_shard(s, stop.clone()))).collect();
        (Rig { bus, packets, recorder, stop, workers }, a_rx, b_rx)
    }

    fn event(source: u32, key: u64, n: u32) -> Event {
        let mut e = Event::new(ComponentId(source), Bytes::from(n.to_be_bytes().to_vec()));
        e.ordering_key = key;
        e
    }

    fn number(e: &Event) -> u32 {
        u32::from_be_bytes(e.payload[..4].try_into().expect("four bytes"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fans_out_in_order_per_key_and_ends_lifecycle_events_quietly() {
        let (rig, mut a, mut b) = rig(1024, 1000);
        for n in 0..100 {
            for key in [7, 8] {
                rig.bus.publish(event(0, key, n)).await.expect("room");
            }
            if n % 10 == 0 {
                let mut connect = event(0, 7, 0);
                connect.kind = EventKind::Connect;
                rig.bus.publish(connect).await.expect("room");
            }
        }
        for target in [&mut a, &mut b] {
            let mut per_key: std::collections::HashMap<u64, Vec<u32>> = std::collections::HashMap::new();
            for _ in 0..200 {
                let d = target.recv().await.expect("delivered");
                assert_eq!(d.event.kind, EventKind::Data, "lifecycle events are never routed");
                per_key.entry(d.event.ordering_key).or_default().push(number(&d.event));
            }
            for key in [7, 8] {
                assert_eq!(per_key[&key], (0..100).collect::<Vec<_>>(), "key {key} kept its order");
            }
        }
        rig.stop.cancel();
        for w in rig.workers {
            w.await.expect("worker ends once stopped");
        }
        let stats = rig.recorder.stats(ComponentId(0)).expect("ws stats");
        assert_eq!(stats.connects.load(Ordering::Relaxed), 10);
        assert!(rig.packets.lock().expect("lock").is_empty(), "deliveries are logged by targets, lifecycle not at all");
        assert!(a.try_recv().is_err() && b.try_recv().is_err(), "nothing else was delivered");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unrouted_event_is_logged_and_its_sender_told() {
        let (rig, _a, _b) = rig(16, 1000);
        let mut e = event(1, 1, 1);
        let (ack, confirmed) = Ack::new();
        e.ack = Some(ack);
        rig.bus.publish(e).await.expect("room");
        assert_eq!(confirmed.await.expect("settled"), Err(DeliveryError::NoRoute(String::from("sse"))));
        rig.stop.cancel();
        for w in rig.workers {
            w.await.expect("worker ends");
        }
        let line: serde_json::Value =
            serde_json::from_slice(&rig.packets.lock().expect("lock")).expect("one JSON line");
        assert_eq!((line["source"].as_str(), line["outcome"].as_str()), (Some("sse"), Some("no_route")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_target_fails_the_delivery_as_busy_after_the_publish_timeout() {
        let (rig, _a, mut b) = rig(1, 20);
        let mut waiting = Vec::new();
        for n in 0..3 {
            let mut e = event(0, 1, n);
            let (ack, confirmed) = Ack::new();
            e.ack = Some(ack);
            rig.bus.publish(e).await.expect("room");
            waiting.push(confirmed);
        }
        // `b` is drained and confirms; `a` is never read, so only its first delivery fits.
        for _ in 0..3 {
            let mut d = b.recv().await.expect("delivered to b");
            d.event.settle(Ok(()));
        }
        let second = waiting.remove(1).await.expect("settled");
        assert_eq!(second, Err(DeliveryError::Busy(String::from("a"))));
        let third = waiting.remove(1).await.expect("settled");
        assert_eq!(third, Err(DeliveryError::Busy(String::from("a"))));
        rig.stop.cancel();
    }
}
