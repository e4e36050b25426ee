//! `fanout`: N subscribers, one publisher at a fixed rate, and what each subscriber
//! received: how many, in which order, how late.
//!
//! Each publisher has one keep-alive connection and sends sequentially (the next
//! `POST` after the previous answer), so the order the host receives from it is its
//! sequence order and any reordering a subscriber sees within one publisher is the
//! host's. Sequence `s` is due at `start + s / rate` and is sent by publisher
//! `s % publishers`; a publisher that falls behind sends back to back until it
//! catches up, and each payload carries its real send time, so latency is measured
//! from the moment it left. One publisher (the default) makes the order check
//! global; more keep the rate when one `POST`'s round trip is longer than `1 / rate`.
//!
//! With [`Via::Broker`] the publishers write straight into a broker with its own
//! protocol instead (the host consumes from it), each message waiting for the
//! broker's confirmation before the next, so the order argument holds the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::Method;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::histogram::{Histogram, ms};
use crate::http::{Connection, Metrics};
use crate::payload::{self, Marker};
use crate::producer::{Destination, Producer, Settled};
use crate::raw::{self, Held, Stall};
use crate::subscriber::{Shared, Subscriber, Tally};
use crate::target::Target;
use crate::{CONNECT_PARALLELISM, Error, cpu_secs, round};

/// The receive buffer of a stalled subscriber's socket: small, so it fills at once.
const STALLED_RECEIVE_BUFFER: u32 = 4096;
/// How long subscribers may take to connect, all of them.
const CONNECT_BUDGET: Duration = Duration::from_secs(60);
/// How long after the last publish the run waits for deliveries still on their way.
const DRAIN_BUDGET: Duration = Duration::from_secs(5);
/// How long past its planned duration the publisher may run when it fell behind.
const PUBLISH_OVERRUN: Duration = Duration::from_secs(10);
/// How often the host's memory is sampled during the run.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Where the publishers send.
#[derive(Debug, Clone)]
pub enum Via {
    /// The host: `POST` to this URL.
    Host(Target),
    /// Straight into a broker the host consumes from.
    Broker(Destination),
    /// One line per payload into this file, for a broker's console producer to send.
    Lines(std::path::PathBuf),
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host(target) => write!(f, "{target}"),
            Self::Broker(Destination::Broker { protocol, to, .. }) => write!(f, "{protocol:?} {to}"),
            Self::Broker(Destination::WebSocket { target, .. }) => write!(f, "{target}"),
            Self::Lines(path) => write!(f, "lines into {}", path.display()),
        }
    }
}

/// One publisher's connection.
#[derive(Debug)]
enum Publisher {
    /// A keep-alive HTTP connection to the host.
    Host(Connection, Target),
    /// A broker client.
    Broker(Producer),
    /// The file lines go to.
    Lines(tokio::fs::File),
}

impl Publisher {
    async fn open(via: &Via, index: usize) -> Result<Self, Error> {
        match via {
            Via::Host(target) => Ok(Self::Host(Connection::open(target).await?, target.clone())),
            Via::Broker(destination) => Ok(Self::Broker(destination.open(index).await?)),
            Via::Lines(path) => Ok(Self::Lines(tokio::fs::OpenOptions::new().append(true).open(path).await?)),
        }
    }

    /// Publishes one message and waits for the answer: the HTTP status, or 200 for
    /// a broker's confirmation (or a line written) and 500 for its refusal.
    async fn send(&mut self, seq: u64, body: Vec<u8>) -> Result<u16, Error> {
        match self {
            Self::Host(connection, target) => {
                let body = Bytes::from(body);
                let (status, _) =
                    connection.send(Method::POST, &target.path_and_query, Some("application/json"), body).await?;
                Ok(status.as_u16())
            }
            Self::Broker(producer) => {
                let confirm = producer.send(seq, body).await?;
                producer.flush().await?;
                Ok(if confirm.await == Settled::Confirmed { 200 } else { 500 })
            }
            Self::Lines(file) => {
                // A payload is one line of JSON: `payload::build` writes no line break.
                let mut line = body;
                line.push(b'\n');
                file.write_all(&line).await?;
                file.flush().await?;
                Ok(200)
            }
        }
    }
}

/// What a `fanout` run needs.
#[derive(Debug)]
pub struct Plan {
    /// Where messages are published.
    pub via: Via,
    /// Where subscribers connect (`ws://` or `http://` for SSE).
    pub subscribe: Target,
    /// Subscribers that read.
    pub subscribers: usize,
    /// Subscribers that connect and never read.
    pub stalled: usize,
    /// Messages published per second.
    pub rate: u32,
    /// Publishers, each with its own connection.
    pub publishers: usize,
    /// How long to publish.
    pub duration: Duration,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// The admin listener, to sample the host's memory during the run.
    pub admin: Option<Target>,
}

/// What the publisher did.
#[derive(Debug, Default)]
struct Published {
    /// Messages the host accepted (2xx).
    accepted: u64,
    /// Answers by status code; `0` counts connection failures. A broker's
    /// confirmation counts as 200, its refusal as 500.
    statuses: BTreeMap<u16, u64>,
    /// When the first message left and the last answer came, on the run's clock.
    first_us: u64,
    /// See `first_us`.
    last_us: u64,
}

/// The host's memory as sampled from `/metrics` during the run.
#[derive(Debug)]
struct HostSide {
    /// Resident bytes before subscribers connected.
    rss_before: Option<u64>,
    /// The most resident bytes seen while publishing.
    rss_max: u64,
    /// `/metrics` once everything was delivered.
    metrics_after: Option<Metrics>,
}

/// Runs the plan and prints its report.
///
/// # Errors
/// When subscribers cannot connect at all, or the publisher cannot reach the host.
pub async fn run(plan: Plan) -> Result<(), Error> {
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64 % 1_000_000_000_000);
    let shared = Arc::new(Shared {
        run: run_id,
        publishers: plan.publishers as u64,
        origin: Instant::now(),
        latency: Histogram::default(),
        distinct: AtomicU64::new(0),
    });
    let rss_before = match &plan.admin {
        Some(admin) => Some(Metrics::read(admin).await?.resident_bytes()?),
        None => None,
    };

    let started = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    let mut readers = JoinSet::new();
    let mut failures = Vec::new();
    {
        let permits = Arc::new(Semaphore::new(CONNECT_PARALLELISM));
        let mut connecting = JoinSet::new();
        for _ in 0..plan.subscribers {
            let (target, permits) = (plan.subscribe.clone(), Arc::clone(&permits));
            connecting.spawn(async move {
                // The semaphore is never closed, so acquiring only waits.
                let _permit = permits.acquire_owned().await;
                Subscriber::connect(&target).await
            });
        }
        let deadline = tokio::time::sleep(CONNECT_BUDGET);
        tokio::pin!(deadline);
        loop {
            let joined = tokio::select! {
                joined = connecting.join_next() => joined,
                () = &mut deadline => {
                    failures.push(format!("{} subscribers still connecting after 60 s", connecting.len()));
                    connecting.abort_all();
                    break;
                }
            };
            match joined {
                None => break,
                Some(Ok(Ok(subscriber))) => {
                    readers.spawn(subscriber.read(Arc::clone(&shared), stop.clone()));
                }
                Some(Ok(Err(e))) => failures.push(e.to_string()),
                Some(Err(e)) => failures.push(e.to_string()),
            }
        }
    }
    let connected = readers.len();
    if connected == 0 {
        return Err(format!("no subscriber could connect: {}", failures.first().map_or("", String::as_str)).into());
    }
    let mut stalled = Vec::with_capacity(plan.stalled);
    for _ in 0..plan.stalled {
        stalled.push(Held::open(&plan.subscribe, Some(STALLED_RECEIVE_BUFFER)).await?);
    }
    let connect_time = started.elapsed();

    let rss_max = Arc::new(AtomicU64::new(rss_before.unwrap_or(0)));
    let sampler = plan.admin.clone().map(|admin| {
        let rss_max = Arc::clone(&rss_max);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(rss) = Metrics::read(&admin).await.and_then(|m| m.resident_bytes()) {
                    rss_max.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::select! {
                    () = tokio::time::sleep(RSS_SAMPLE_EVERY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    });

    let cpu_before = cpu_secs();
    let published = publish_all(&plan, &shared).await?;

    // Wait for what is still on its way, then stop every reader.
    let expected = published.accepted * connected as u64;
    let drain_until = Instant::now() + DRAIN_BUDGET;
    while shared.distinct.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let loadgen_cores = cpu_before.zip(cpu_secs()).map(|(b, a)| {
        let wall = shared.now_us().saturating_sub(published.first_us).max(1) as f64 / 1e6;
        round((a - b) / wall)
    });
    let stalls: Vec<Stall> = match raw::sockets() {
        Some(sockets) => stalled.iter().map(|held| held.stall(&sockets)).collect(),
        None => Vec::new(),
    };
    let metrics_after = match &plan.admin {
        Some(admin) => Some(Metrics::read(admin).await?),
        None => None,
    };
    let _ = stop_tx.send(true);
    let mut tallies = Vec::with_capacity(connected);
    while let Some(joined) = readers.join_next().await {
        match joined {
            Ok(tally) => tallies.push(tally),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    drop(stalled);

    let host = HostSide { rss_before, rss_max: rss_max.load(Ordering::Relaxed), metrics_after };
    report(&plan, &shared, &published, &tallies, &stalls, &failures, connect_time, &host, loadgen_cores);
    Ok(())
}

/// Publishes `rate × duration` messages with every publisher and adds up what they did.
async fn publish_all(plan: &Plan, shared: &Arc<Shared>) -> Result<Published, Error> {
    let total = u64::from(plan.rate) * plan.duration.as_secs();
    let period = Duration::from_secs(1) / plan.rate;
    let start = tokio::time::Instant::now();
    let schedule = Schedule { total, period, start, hard_stop: start + plan.duration + PUBLISH_OVERRUN };
    let mut publishers = JoinSet::new();
    for first in 0..plan.publishers {
        let publisher = Publisher::open(&plan.via, first).await?;
        let (via, shared) = (plan.via.clone(), Arc::clone(shared));
        let (step, size) = (plan.publishers as u64, plan.payload_bytes);
        publishers.spawn(async move { publish(publisher, via, shared, schedule, first, step, size).await });
    }
    let mut all = Published { first_us: u64::MAX, ..Published::default() };
    while let Some(joined) = publishers.join_next().await {
        let one = joined??;
        all.accepted += one.accepted;
        for (status, count) in one.statuses {
            *all.statuses.entry(status).or_default() += count;
        }
        all.first_us = all.first_us.min(one.first_us);
        all.last_us = all.last_us.max(one.last_us);
    }
    Ok(all)
}

/// When each message is due.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// Messages in all.
    total: u64,
    /// Time between two messages.
    period: Duration,
    /// When message 0 is due.
    start: tokio::time::Instant,
    /// No message leaves after this, even when publishing fell behind.
    hard_stop: tokio::time::Instant,
}

/// One publisher: sequences `first`, `first + step`, ... each at its due time, one
/// message after another on `publisher`.
async fn publish(
    mut publisher: Publisher,
    via: Via,
    shared: Arc<Shared>,
    schedule: Schedule,
    first: usize,
    step: u64,
    payload_bytes: usize,
) -> Result<Published, Error> {
    let mut published = Published { first_us: shared.now_us(), ..Published::default() };
    for seq in (first as u64..schedule.total).step_by(usize::try_from(step).unwrap_or(1)) {
        let due = schedule.start + schedule.period * u32::try_from(seq).unwrap_or(u32::MAX);
        if due >= schedule.hard_stop {
            break;
        }
        tokio::time::sleep_until(due).await;
        let marker = Marker { run: shared.run, seq, sent_us: shared.now_us() };
        match publisher.send(seq, payload::build(marker, payload_bytes)).await {
            Ok(status) => {
                *published.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    published.accepted += 1;
                }
            }
            Err(_) => {
                // Whether the host took this one cannot be told now; subscribers
                // count it as missing if it never arrives. Reconnect and go on.
                *published.statuses.entry(0).or_default() += 1;
                publisher = Publisher::open(&via, first).await?;
            }
        }
    }
    published.last_us = shared.now_us();
    Ok(published)
}

#[expect(clippy::too_many_arguments, reason = "one call site, every figure of the report")]
fn report(
    plan: &Plan,
    shared: &Shared,
    published: &Published,
    tallies: &[Tally],
    stalled: &[Stall],
    failures: &[String],
    connect_time: Duration,
    host: &HostSide,
    loadgen_cores: Option<f64>,
) {
    let (rss_before, metrics_after) = (host.rss_before, host.metrics_after.as_ref());
    let sent: u64 = published.statuses.values().sum();
    let publish_secs = (published.last_us.saturating_sub(published.first_us)).max(1) as f64 / 1e6;
    let deliveries: u64 = tallies.iter().map(|t| t.deliveries).sum();
    let last_delivery = tallies.iter().map(|t| t.last_us).max().unwrap_or(0);
    let delivery_secs = last_delivery.saturating_sub(published.first_us).max(1) as f64 / 1e6;
    let per_sub: Vec<u64> = tallies.iter().map(|t| t.deliveries).collect();
    let min = per_sub.iter().copied().min().unwrap_or(0);
    let avg = if per_sub.is_empty() { 0.0 } else { deliveries as f64 / per_sub.len() as f64 };
    let max = per_sub.iter().copied().max().unwrap_or(0);
    let missing: u64 = tallies.iter().map(|t| published.accepted.saturating_sub(t.distinct())).sum();
    let duplicates: u64 = tallies.iter().map(|t| t.duplicates).sum();
    let out_of_order: u64 = tallies.iter().map(|t| t.out_of_order).sum();
    let foreign: u64 = tallies.iter().map(|t| t.foreign).sum();
    let ended: Vec<&str> = tallies.iter().filter_map(|t| t.ended.as_deref()).collect();
    let latency = &shared.latency;
    let (p50, p99, lmax) = (latency.percentile_us(0.50), latency.percentile_us(0.99), latency.max_us());
    let unread: Vec<u64> = stalled.iter().map(|s| s.client_queue + s.host_queue).collect();
    let unread_max = unread.iter().copied().max().unwrap_or(0);
    let stalled_closed = stalled.iter().filter(|s| s.closed).count();
    let bytes_per_reader = tallies.iter().map(|t| t.bytes).sum::<u64>() / (tallies.len().max(1) as u64);
    let rss_after = metrics_after.and_then(|m| m.resident_bytes().ok());
    let rss_peak = rss_after.map(|after| host.rss_max.max(after));
    let slow_consumers = metrics_after.map(|m| m.sum("mediation_slow_consumers_total"));

    println!(
        "fanout: {} subscribers ({} connected, {} stalled) at {}, {} msg/s to {} by {} publishers for {} s, {}-byte payloads",
        plan.subscribers,
        tallies.len(),
        plan.stalled,
        plan.subscribe,
        plan.rate,
        plan.via,
        plan.publishers,
        plan.duration.as_secs(),
        plan.payload_bytes
    );
    println!("connect: {:.2} s for all subscribers", connect_time.as_secs_f64());
    println!(
        "published: {sent} sent, {} accepted in {publish_secs:.2} s ({:.0}/s), statuses {:?}",
        published.accepted,
        sent as f64 / publish_secs,
        published.statuses
    );
    println!("delivered: {deliveries} in {delivery_secs:.2} s = {:.0} deliveries/s", deliveries as f64 / delivery_secs);
    println!("per subscriber: min {min}, avg {avg:.1}, max {max} (expected {})", published.accepted);
    println!("missing {missing}, duplicates {duplicates}, out of order {out_of_order}, foreign {foreign}");
    println!("latency publish-to-receive ms: p50 {} p99 {} max {}", ms(p50), ms(p99), ms(lmax));
    if plan.stalled > 0 && stalled.is_empty() {
        println!("stalled: /proc/net/tcp cannot be read, so what they hold unread is unknown");
    } else if !stalled.is_empty() {
        println!(
            "stalled: at most {unread_max} bytes unread in kernel queues per stalled client, of the {bytes_per_reader} \
             each reading subscriber got (fewer means the host's writer waited); {stalled_closed} closed by the host"
        );
    }
    if let (Some(before), Some(after), Some(peak)) = (rss_before, rss_after, rss_peak) {
        println!(
            "host RSS MiB: before {:.1}, peak {:.1}, after {:.1}; slow consumers counted {}",
            before as f64 / 1048576.0,
            peak as f64 / 1048576.0,
            after as f64 / 1048576.0,
            slow_consumers.unwrap_or(0.0)
        );
    }
    if let Some(cores) = loadgen_cores {
        println!("the load generator itself used {cores} cores while publishing and draining");
    }
    if !ended.is_empty() {
        println!("{} subscribers ended early; first: {}", ended.len(), ended[0]);
    }
    if !failures.is_empty() {
        println!("{} connect failures; first: {}", failures.len(), failures[0]);
    }
    let summary = json!({
        "mode": "fanout",
        "publish": plan.via.to_string(),
        "subscribe": plan.subscribe.to_string(),
        "subscribers": plan.subscribers,
        "connected": tallies.len(),
        "stalled": plan.stalled,
        "rate": plan.rate,
        "publishers": plan.publishers,
        "duration_secs": plan.duration.as_secs(),
        "payload_bytes": plan.payload_bytes,
        "published": sent,
        "accepted": published.accepted,
        "publish_per_sec": round(sent as f64 / publish_secs),
        "deliveries": deliveries,
        "deliveries_per_sec": round(deliveries as f64 / delivery_secs),
        "per_subscriber_min": min,
        "per_subscriber_avg": round(avg),
        "per_subscriber_max": max,
        "missing": missing,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "foreign": foreign,
        "latency_p50_ms": round(p50 as f64 / 1000.0),
        "latency_p99_ms": round(p99 as f64 / 1000.0),
        "latency_max_ms": round(lmax as f64 / 1000.0),
        "ended_early": ended.len(),
        "connect_failures": failures.len(),
        "stalled_unread_bytes_max": unread_max,
        "bytes_per_subscriber": bytes_per_reader,
        "stalled_closed_by_host": stalled_closed,
        "host_rss_before_bytes": rss_before,
        "host_rss_peak_bytes": rss_peak,
        "host_rss_after_bytes": rss_after,
        "host_slow_consumers": slow_consumers,
        "loadgen_cores": loadgen_cores,
    });
    println!("{summary}");
}
