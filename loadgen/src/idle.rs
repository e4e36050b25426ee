//! `idle`: what an idle connection costs the host. Reads the host's resident
//! memory, opens N connections that then do nothing, waits until the host's
//! `mediation_connections` gauge counts them all, reads the memory again, and
//! closes them, checking that the gauge returns to where it started.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::http::Metrics;
use crate::raw::Held;
use crate::target::Target;
use crate::{CONNECT_PARALLELISM, Error, round};

/// How long the host may take to count every connection, or to count them gone.
const GAUGE_BUDGET: Duration = Duration::from_secs(60);
/// How often the gauge is read while waiting.
const GAUGE_POLL: Duration = Duration::from_millis(200);
/// A pause before each memory reading, so that the host's allocator settles.
const SETTLE: Duration = Duration::from_secs(1);

/// What an `idle` run needs.
#[derive(Debug)]
pub struct Plan {
    /// Where to connect (`ws://` or `http://` for SSE).
    pub url: Target,
    /// Connections to open.
    pub connections: usize,
    /// The host's admin listener.
    pub admin: Target,
    /// The entrypoint's name, the `component` label of the gauge.
    pub component: String,
}

/// Runs the plan and prints its report.
///
/// # Errors
/// When the admin listener does not answer, a connection fails, or the gauge does
/// not reach the expected value in time.
pub async fn run(plan: Plan) -> Result<(), Error> {
    let series = format!("mediation_connections{{component=\"{}\"}}", plan.component);
    let before = Metrics::read(&plan.admin).await?;
    let baseline = before
        .value(&series)
        .ok_or_else(|| format!("/metrics has no `{series}`; is --component the entrypoint's name?"))?;
    tokio::time::sleep(SETTLE).await;
    let rss_before = Metrics::read(&plan.admin).await?.resident_bytes()?;

    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(CONNECT_PARALLELISM));
    let mut opening = JoinSet::new();
    for _ in 0..plan.connections {
        let (url, permits) = (plan.url.clone(), Arc::clone(&permits));
        opening.spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let _permit = permits.acquire_owned().await;
            Held::open(&url, None).await
        });
    }
    let mut held = Vec::with_capacity(plan.connections);
    while let Some(joined) = opening.join_next().await {
        held.push(joined??);
    }
    let open_secs = started.elapsed().as_secs_f64();
    let target = baseline + plan.connections as f64;
    let counted = wait_for_gauge(&plan.admin, &series, |g| g >= target).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_open = Metrics::read(&plan.admin).await?.resident_bytes()?;

    let closed_at = Instant::now();
    drop(held);
    let back = wait_for_gauge(&plan.admin, &series, |g| g <= baseline).await;
    let close_secs = closed_at.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_closed = Metrics::read(&plan.admin).await?.resident_bytes()?;

    let grown = rss_open.saturating_sub(rss_before);
    let per_connection_kib = grown as f64 / plan.connections as f64 / 1024.0;
    let mib = |b: u64| b as f64 / 1_048_576.0;
    println!("idle: {} connections to {}", plan.connections, plan.url);
    println!("opened in {open_secs:.2} s; the gauge showed {counted} (baseline {baseline})");
    println!(
        "host RSS MiB: before {:.1}, with the connections {:.1}, after closing {:.1}",
        mib(rss_before),
        mib(rss_open),
        mib(rss_closed)
    );
    println!("RSS per connection: {per_connection_kib:.2} KiB");
    match &back {
        Ok(g) => println!("gauge back to {g} in {close_secs:.2} s after closing"),
        Err(e) => println!("gauge did not return to the baseline: {e}"),
    }
    let summary = json!({
        "mode": "idle",
        "url": plan.url.to_string(),
        "component": plan.component,
        "connections": plan.connections,
        "open_secs": round(open_secs),
        "gauge_open": counted,
        "gauge_closed": back.as_ref().ok(),
        "gauge_returned": back.is_ok(),
        "rss_before_bytes": rss_before,
        "rss_open_bytes": rss_open,
        "rss_closed_bytes": rss_closed,
        "rss_per_connection_kib": round(per_connection_kib),
    });
    println!("{summary}");
    back.map(|_| ())
}

/// Polls the gauge until `done` holds, for at most [`GAUGE_BUDGET`]; returns the last value.
async fn wait_for_gauge(admin: &Target, series: &str, done: impl Fn(f64) -> bool) -> Result<f64, Error> {
    let until = Instant::now() + GAUGE_BUDGET;
    loop {
        let value = Metrics::read(admin).await?.value(series).unwrap_or(f64::NAN);
        if done(value) {
            return Ok(value);
        }
        if Instant::now() >= until {
            return Err(format!("`{series}` is {value} after {} s", GAUGE_BUDGET.as_secs()).into());
        }
        tokio::time::sleep(GAUGE_POLL).await;
    }
}
