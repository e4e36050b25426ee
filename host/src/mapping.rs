//! The one place where a target's deliveries go through its adapter. Every target
//! (an entrypoint's hub, a broker endpoint, a memory topic) takes a batch from its
//! queue and hands it here: the batch is split into runs of one route (an adapter
//! call serves one route), each run is mapped, and what the adapter refused, or a
//! call that failed as a whole, is finished here with its reason, so that the target
//! only sees what it should deliver.

use std::sync::Arc;

use crate::adapter::{self, Adapter};
use crate::event::{DeliveryError, Event};
use crate::pipeline::{Delivery, Recorder};
use crate::routing::{Direction, Route};

/// Maps a target's `batch` (drained) through `adapter` in `direction`, and returns,
/// in order, each run of one route with the events it mapped to. Without an adapter,
/// the events pass as they are. The packet lines of what failed go to `log`.
pub fn map_batch(
    recorder: &Recorder,
    adapter: Option<&Adapter>,
    direction: Direction,
    batch: &mut Vec<Delivery>,
    log: &mut Vec<u8>,
) -> Vec<(Arc<Route>, Vec<Event>)> {
    let mut runs = runs_by_route(batch);
    if let Some(adapter) = adapter {
        for (route, events) in &mut runs {
            let inputs = std::mem::take(events);
            *events = map_run(recorder, adapter, direction, route, inputs, log);
        }
    }
    runs
}

/// Maps one run of `route`'s `events` and returns the outputs. Events the adapter
/// refuses, and those of a call that fails, are finished as adapter errors, each with
/// its reason; a source retries the second kind and rejects the first.
fn map_run(
    recorder: &Recorder,
    adapter: &Adapter,
    direction: Direction,
    route: &Route,
    events: Vec<Event>,
    log: &mut Vec<u8>,
) -> Vec<Event> {
    let mapped = adapter.map(direction, &adapter::route_context(route.index), events);
    for (event, error) in mapped.refused {
        let refused = DeliveryError::Adapter { adapter: adapter.name().to_owned(), message: error.message };
        recorder.finish(event, route, Err(refused), log);
    }
    if let Some((events, error)) = mapped.failed {
        for event in events {
            recorder.finish(event, route, Err(DeliveryError::AdapterFailed(error.to_string())), log);
        }
    }
    mapped.outputs
}

/// Splits a target's `batch` into runs of consecutive deliveries on the same route,
/// keeping their order: an adapter call takes one route.
fn runs_by_route(batch: &mut Vec<Delivery>) -> Vec<(Arc<Route>, Vec<Event>)> {
    let mut runs: Vec<(Arc<Route>, Vec<Event>)> = Vec::new();
    let total = batch.len();
    for delivery in batch.drain(..) {
        match runs.last_mut() {
            Some((route, events)) if Arc::ptr_eq(route, &delivery.route) => events.push(delivery.event),
            _ => {
                // Most batches are one run; size it for the whole batch once.
                let mut events = Vec::with_capacity(total);
                events.push(delivery.event);
                runs.push((delivery.route, events));
            }
        }
    }
    runs
}
