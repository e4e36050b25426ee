//! `ingest`: N keep-alive connections, each sending `POST`s back to back for a
//! fixed time; requests per second, answers by status, and latency.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use serde_json::json;
use tokio::task::JoinSet;

use crate::histogram::{Histogram, ms};
use crate::http::Connection;
use crate::payload::{self, Marker};
use crate::target::Target;
use crate::{Error, cpu_secs, round};

/// How long a connection that failed waits before it reconnects.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// What an `ingest` run needs.
#[derive(Debug)]
pub struct Plan {
    /// Where to `POST`.
    pub url: Target,
    /// Connections, each with one request in flight.
    pub connections: usize,
    /// How long to send.
    pub duration: Duration,
    /// Body size in bytes.
    pub payload_bytes: usize,
}

/// One connection's account.
#[derive(Debug, Default)]
struct Tally {
    /// Answers by status code.
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection failures, timeouts).
    errors: u64,
    /// The first error, to show what went wrong.
    first_error: Option<String>,
}

/// Runs the plan and prints its report.
///
/// # Errors
/// When not a single connection can be opened.
pub async fn run(plan: Plan) -> Result<(), Error> {
    // Fail fast, with the reason, when the host is not there at all.
    drop(Connection::open(&plan.url).await?);
    let latency = Arc::new(Histogram::default());
    let body = Bytes::from(payload::build(Marker { run: 0, seq: 0, sent_us: 0 }, plan.payload_bytes));
    let started = Instant::now();
    let cpu_before = cpu_secs();
    let deadline = tokio::time::Instant::now() + plan.duration;
    let mut tasks = JoinSet::new();
    for _ in 0..plan.connections {
        let (url, latency, body) = (plan.url.clone(), Arc::clone(&latency), body.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let mut connection = None;
            while tokio::time::Instant::now() < deadline {
                let open = match connection.as_mut() {
                    Some(open) => open,
                    None => match Connection::open(&url).await {
                        Ok(open) => connection.insert(open),
                        Err(e) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert_with(|| e.to_string());
                            tokio::time::sleep(RECONNECT_PAUSE).await;
                            continue;
                        }
                    },
                };
                let sent = Instant::now();
                match open.send(Method::POST, &url.path_and_query, Some("application/json"), body.clone()).await {
                    Ok((status, _)) => {
                        latency.record(sent.elapsed());
                        *tally.statuses.entry(status.as_u16()).or_default() += 1;
                    }
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| e.to_string());
                        connection = None;
                    }
                }
            }
            tally
        });
    }
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let (mut errors, mut first_error) = (0, None);
    while let Some(joined) = tasks.join_next().await {
        let tally = joined?;
        for (status, count) in tally.statuses {
            *statuses.entry(status).or_default() += count;
        }
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let loadgen_cores = cpu_before.zip(cpu_secs()).map(|(b, a)| round((a - b) / elapsed));
    let answered: u64 = statuses.values().sum();
    let accepted: u64 = statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
    let (p50, p99, max) = (latency.percentile_us(0.50), latency.percentile_us(0.99), latency.max_us());

    println!(
        "ingest: {} connections to {} for {} s, {}-byte bodies",
        plan.connections,
        plan.url,
        plan.duration.as_secs(),
        plan.payload_bytes
    );
    println!(
        "requests: {answered} answered in {elapsed:.2} s = {:.0} requests/s ({:.0} accepted/s)",
        answered as f64 / elapsed,
        accepted as f64 / elapsed
    );
    println!("statuses: {statuses:?}, errors {errors}");
    if let Some(e) = &first_error {
        println!("first error: {e}");
    }
    println!("latency ms: p50 {} p99 {} max {}", ms(p50), ms(p99), ms(max));
    if let Some(cores) = loadgen_cores {
        println!("the load generator itself used {cores} cores");
    }
    let statuses: BTreeMap<String, u64> = statuses.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
    let summary = json!({
        "mode": "ingest",
        "url": plan.url.to_string(),
        "connections": plan.connections,
        "duration_secs": plan.duration.as_secs(),
        "payload_bytes": plan.payload_bytes,
        "requests": answered,
        "requests_per_sec": round(answered as f64 / elapsed),
        "accepted_per_sec": round(accepted as f64 / elapsed),
        "statuses": statuses,
        "errors": errors,
        "latency_p50_ms": round(p50 as f64 / 1000.0),
        "latency_p99_ms": round(p99 as f64 / 1000.0),
        "latency_max_ms": round(max as f64 / 1000.0),
        "loadgen_cores": loadgen_cores,
    });
    println!("{summary}");
    Ok(())
}
