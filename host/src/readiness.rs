//! What `/readyz` reports: whether the host started and is not stopping, which
//! components said they are down and why, adapters that keep failing, and a bus that
//! refuses publishers. Components report into it; the admin listener reads it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::adapter::Adapter;
use crate::bus::Pressure;

/// What `/readyz` checks.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Set once every component started and every listener is bound.
    started: AtomicBool,
    /// Set when shutdown begins, so that Envoy stops sending new traffic.
    stopping: AtomicBool,
    /// Components that said they are not ready, with why (a broker down, say).
    down: Mutex<Vec<(String, String)>>,
    /// Every loaded adapter, checked for repeated failures.
    adapters: Mutex<Vec<Adapter>>,
    /// The bus, which is not ready while it refuses publishers as busy.
    bus: OnceLock<Arc<Pressure>>,
}

impl Readiness {
    /// Marks startup complete.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Marks shutdown begun.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Watches one more adapter.
    pub fn watch_adapter(&self, adapter: Adapter) {
        self.adapters.lock().unwrap_or_else(PoisonError::into_inner).push(adapter);
    }

    /// Watches the bus for refused publishers.
    pub fn watch_bus(&self, pressure: Arc<Pressure>) {
        let _ = self.bus.set(pressure);
    }

    /// Reports component `name` down because of `reason`, or up again with `None`.
    pub fn report(&self, name: &str, reason: Option<String>) {
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        down.retain(|(n, _)| n != name);
        if let Some(reason) = reason {
            down.push((name.to_owned(), reason));
        }
    }

    /// Every reason the host is not ready; empty when it is.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.started.load(Ordering::Acquire) {
            problems.push(String::from("starting"));
        }
        if self.stopping.load(Ordering::Acquire) {
            problems.push(String::from("shutting down"));
        }
        if self.bus.get().is_some_and(|bus| bus.busy()) {
            problems.push(String::from("the event bus is full: publishers are refused as busy"));
        }
        for (name, reason) in self.down.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            problems.push(format!("{name}: {reason}"));
        }
        for adapter in self.adapters.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            if adapter.is_failing() {
                problems.push(format!("{}: adapter keeps failing", adapter.name()));
            }
        }
        problems
    }

    /// Every adapter watched, for the metrics that list them.
    pub(crate) fn adapters(&self) -> Vec<Adapter> {
        self.adapters.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
