//! `ws-ingest` and `broker-ingest`: N connections, each keeping a window of W
//! unconfirmed messages of a fixed size for a fixed time; confirmed messages/s,
//! refusals, and the send-to-confirm latency.
//!
//! The same loop drives the host (WebSocket envelope publishes with `"ack": true`,
//! confirmed once every target confirmed) and a broker's own protocol, so the
//! two rows of a comparison differ only in what is on the other end.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::json;
use tokio::task::JoinSet;

use crate::histogram::{Histogram, ms};
use crate::payload::{self, Marker};
use crate::producer::{Confirm, Destination, Producer, Settled};
use crate::{Error, cpu_secs, round};

/// How long after the sending time the run waits for the last confirmations
/// (the host's WebSocket `ack_timeout_ms` default).
const DRAIN_BUDGET: Duration = Duration::from_secs(10);

/// What a run needs.
#[derive(Debug)]
pub struct Plan {
    /// The mode's name in the report (`ws-ingest`, `broker-ingest`).
    pub mode: &'static str,
    /// Where the producers connect.
    pub destination: Destination,
    /// Connections, each with its own window.
    pub connections: usize,
    /// Unconfirmed messages each connection keeps in flight.
    pub window: usize,
    /// How long to send.
    pub duration: Duration,
    /// Message size in bytes (the broker's message body).
    pub payload_bytes: usize,
}

/// One connection's account.
#[derive(Debug, Default)]
struct Tally {
    /// Messages handed to the connection.
    sent: u64,
    /// Messages confirmed.
    confirmed: u64,
    /// Messages refused (a negative ack, an error status, a timeout).
    refused: u64,
    /// Messages neither confirmed nor refused: the connection failed or the drain
    /// budget ran out.
    unanswered: u64,
    /// The first refusal or failure, to show what went wrong.
    first_error: Option<String>,
    /// When this connection's last confirmation arrived, since the run started.
    last_confirm: Duration,
}

impl Tally {
    fn error(&mut self, e: impl ToString) {
        self.first_error.get_or_insert_with(|| e.to_string());
    }
}

/// Runs the plan and prints its report.
///
/// # Errors
/// When not a single connection can be opened.
pub async fn run(plan: Plan) -> Result<(), Error> {
    let mut producers = Vec::with_capacity(plan.connections);
    for index in 0..plan.connections {
        producers.push(plan.destination.open(index).await?);
    }
    let latency = Arc::new(Histogram::default());
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64 % 1_000_000_000_000);
    let started = Instant::now();
    let cpu_before = cpu_secs();
    let mut tasks = JoinSet::new();
    for producer in producers {
        let latency = Arc::clone(&latency);
        let (window, size, duration) = (plan.window, plan.payload_bytes, plan.duration);
        tasks.spawn(async move { drive(producer, window, size, started, duration, run_id, &latency).await });
    }
    let mut all = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let one = joined?;
        all.sent += one.sent;
        all.confirmed += one.confirmed;
        all.refused += one.refused;
        all.unanswered += one.unanswered;
        all.last_confirm = all.last_confirm.max(one.last_confirm);
        all.first_error = all.first_error.or(one.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let loadgen_cores = cpu_before.zip(cpu_secs()).map(|(b, a)| round((a - b) / elapsed));
    report(&plan, &all, &latency, loadgen_cores);
    Ok(())
}

/// One connection: keeps `window` messages unconfirmed until `duration` has passed
/// since `started`, then waits for the rest.
async fn drive(
    mut producer: Producer,
    window: usize,
    size: usize,
    started: Instant,
    duration: Duration,
    run: u64,
    latency: &Histogram,
) -> Tally {
    let mut tally = Tally::default();
    let mut pending: FuturesUnordered<_> = FuturesUnordered::new();
    let timed = |sent: Instant, confirm: Confirm| async move { (sent, confirm.await) };
    let stop_sending = started + duration;
    let mut failed = false;
    loop {
        let sending = !failed && Instant::now() < stop_sending;
        if sending && pending.len() < window {
            while pending.len() < window {
                let marker = Marker { run, seq: tally.sent, sent_us: started.elapsed().as_micros() as u64 };
                match producer.send(tally.sent, payload::build(marker, size)).await {
                    Ok(confirm) => {
                        pending.push(timed(Instant::now(), confirm));
                        tally.sent += 1;
                    }
                    Err(e) => {
                        tally.error(e);
                        failed = true;
                        break;
                    }
                }
            }
            if let Err(e) = producer.flush().await {
                tally.error(e);
                failed = true;
            }
        }
        if pending.is_empty() {
            if sending {
                continue;
            }
            break;
        }
        let budget =
            if sending { duration } else { (stop_sending + DRAIN_BUDGET).saturating_duration_since(Instant::now()) };
        let Ok(Some((sent, answer))) = tokio::time::timeout(budget, pending.next()).await else {
            // The drain budget ran out: what is still pending stays unanswered.
            break;
        };
        match answer {
            Settled::Confirmed => {
                latency.record(sent.elapsed());
                tally.confirmed += 1;
                tally.last_confirm = started.elapsed();
            }
            Settled::Refused(e) => {
                tally.error(e);
                tally.refused += 1;
            }
            Settled::Lost(e) => {
                tally.error(e);
                tally.unanswered += 1;
                failed = true;
            }
        }
    }
    tally.unanswered += pending.len() as u64;
    tally
}

fn report(plan: &Plan, all: &Tally, latency: &Histogram, loadgen_cores: Option<f64>) {
    let secs = all.last_confirm.as_secs_f64().max(1e-6);
    let rate = all.confirmed as f64 / secs;
    let (p50, p99, max) = (latency.percentile_us(0.50), latency.percentile_us(0.99), latency.max_us());
    let destination = match &plan.destination {
        Destination::WebSocket { target, .. } => target.to_string(),
        Destination::Broker { protocol, to, .. } => format!("{protocol:?} {to}").to_lowercase(),
    };
    println!(
        "{}: {} connections × window {} to {destination} for {} s, {}-byte messages",
        plan.mode,
        plan.connections,
        plan.window,
        plan.duration.as_secs(),
        plan.payload_bytes
    );
    println!("confirmed: {} of {} sent in {secs:.2} s = {rate:.0} msgs/s", all.confirmed, all.sent);
    println!("refused {}, unanswered {}", all.refused, all.unanswered);
    if let Some(e) = &all.first_error {
        println!("first error: {e}");
    }
    println!("latency send-to-confirm ms: p50 {} p99 {} max {}", ms(p50), ms(p99), ms(max));
    if let Some(cores) = loadgen_cores {
        println!("the load generator itself used {cores} cores");
    }
    let summary = json!({
        "mode": plan.mode,
        "destination": destination,
        "connections": plan.connections,
        "window": plan.window,
        "duration_secs": plan.duration.as_secs(),
        "payload_bytes": plan.payload_bytes,
        "sent": all.sent,
        "confirmed": all.confirmed,
        "confirmed_per_sec": round(rate),
        "refused": all.refused,
        "unanswered": all.unanswered,
        "first_error": all.first_error,
        "latency_p50_ms": round(p50 as f64 / 1000.0),
        "latency_p99_ms": round(p99 as f64 / 1000.0),
        "latency_max_ms": round(max as f64 / 1000.0),
        "loadgen_cores": loadgen_cores,
    });
    println!("{summary}");
}
