//! The admin listener: `/healthz` (the process answers), `/readyz` (every component
//! is up and no adapter keeps failing) and `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::{Method, StatusCode};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::metrics::{Exposition, Outcome, label};
use crate::pipeline::Recorder;
use crate::readiness::Readiness;
use crate::routing::Routes;
use crate::server::{self, Handler, respond};

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Readiness.
    pub readiness: Arc<Readiness>,
    /// Routes and their counters.
    pub routes: Arc<Routes>,
    /// Component counters.
    pub recorder: Arc<Recorder>,
    /// Bus depth.
    pub bus: Bus,
}

/// Binds `addr` and serves the admin endpoints until `shutdown`.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> std::io::Result<SocketAddr> {
    let listener = server::bind(addr).await?;
    let bound = listener.local_addr()?;
    let state = Arc::new(state);
    let handler: Handler = Arc::new(move |request, _peer| {
        let state = Arc::clone(&state);
        Box::pin(async move {
            if request.method() != Method::GET {
                return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
            }
            match request.uri().path() {
                "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
                "/readyz" => ready(&state.readiness),
                "/metrics" => respond(StatusCode::OK, "text/plain; version=0.0.4", render(&state)),
                _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found: try /healthz, /readyz or /metrics\n"),
            }
        })
    });
    server::spawn(listener, handler, server::Limits::default(), shutdown, tasks);
    Ok(bound)
}

fn ready(readiness: &Readiness) -> hyper::Response<server::Body> {
    let problems = readiness.problems();
    let body = serde_json::json!({ "ready": problems.is_empty(), "problems": problems }).to_string();
    let status = if problems.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    respond(status, "application/json", body)
}

/// Resident set size from `/proc/self/statm` (0 where there is no procfs).
fn resident_memory_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // Linux pages are 4 KiB on the platforms the host runs on.
    pages * 4096
}

/// The whole `/metrics` text.
fn render(state: &AdminState) -> String {
    let mut e = Exposition::default();
    let table = state.routes.snapshot();
    e.family("mediation_events_total", "counter", "Events delivered or not, by route and outcome.");
    for route in table.routes() {
        for outcome in Outcome::ALL {
            if outcome != Outcome::NoRoute {
                let labels = format!("route=\"{}\",outcome=\"{}\"", label(&route.label), outcome.as_str());
                e.sample("mediation_events_total", &labels, route.stats.count(outcome));
            }
        }
    }
    e.family("mediation_delivery_latency_seconds", "histogram", "Time from receipt to the target's confirmation.");
    for route in table.routes() {
        e.histogram(
            "mediation_delivery_latency_seconds",
            &format!("route=\"{}\"", label(&route.label)),
            &route.stats.latency,
        );
    }
    let components = state.recorder.components();
    let per_component = |e: &mut Exposition, name: &str, read: &dyn Fn(&crate::metrics::ComponentStats) -> i64| {
        for id in (0..components.len()).map(|i| crate::routing::ComponentId(u32::try_from(i).unwrap_or(u32::MAX))) {
            if let Some(stats) = state.recorder.stats(id) {
                e.sample(name, &format!("component=\"{}\"", label(components.name(id))), read(stats));
            }
        }
    };
    let load = |a: &std::sync::atomic::AtomicU64| i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
    e.family("mediation_unrouted_events_total", "counter", "Events no route took, by source.");
    per_component(&mut e, "mediation_unrouted_events_total", &|s| load(&s.unrouted));
    e.family("mediation_client_connects_total", "counter", "Client connect lifecycle events.");
    per_component(&mut e, "mediation_client_connects_total", &|s| load(&s.connects));
    e.family("mediation_client_disconnects_total", "counter", "Client disconnect lifecycle events.");
    per_component(&mut e, "mediation_client_disconnects_total", &|s| load(&s.disconnects));
    e.family(
        "mediation_slow_consumers_total",
        "counter",
        "Clients the replay ring moved past (disconnected or skipped ahead).",
    );
    per_component(&mut e, "mediation_slow_consumers_total", &|s| load(&s.slow_consumers));
    e.family("mediation_ring_evictions_total", "counter", "Replay ring entries evicted to respect its limits.");
    per_component(&mut e, "mediation_ring_evictions_total", &|s| load(&s.ring_evictions));
    e.family("mediation_broker_reconnects_total", "counter", "Broker connections re-established after a loss.");
    per_component(&mut e, "mediation_broker_reconnects_total", &|s| load(&s.reconnects));
    e.family(
        "mediation_client_write_timeouts_total",
        "counter",
        "Client connections closed because they took no bytes for host.send_timeout_ms.",
    );
    e.sample("mediation_client_write_timeouts_total", "", state.recorder.write_timeouts().load(Ordering::Relaxed));
    e.family("mediation_connections", "gauge", "Open client connections.");
    per_component(&mut e, "mediation_connections", &|s| s.connections.load(Ordering::Relaxed));
    e.family("process_resident_memory_bytes", "gauge", "Resident memory of the host process.");
    e.sample("process_resident_memory_bytes", "", resident_memory_bytes());
    e.family("mediation_bus_depth", "gauge", "Events queued on the bus.");
    e.sample("mediation_bus_depth", "", state.bus.depth());

    let adapters = state.readiness.adapters();
    e.family("mediation_adapter_calls_total", "counter", "Adapter mapping calls.");
    for a in &adapters {
        e.sample(
            "mediation_adapter_calls_total",
            &format!("adapter=\"{}\"", label(a.name())),
            a.stats().calls.load(Ordering::Relaxed),
        );
    }
    e.family("mediation_adapter_failures_total", "counter", "Failed adapter calls by reason, and refused items.");
    for a in &adapters {
        let s = a.stats();
        for (reason, counter) in [
            ("trap", &s.traps),
            ("timeout", &s.timeouts),
            ("memory", &s.out_of_memory),
            ("invalid_output", &s.invalid_output),
            ("item_refused", &s.item_errors),
        ] {
            let labels = format!("adapter=\"{}\",reason=\"{reason}\"", label(a.name()));
            e.sample("mediation_adapter_failures_total", &labels, counter.load(Ordering::Relaxed));
        }
    }
    e.finish()
}
