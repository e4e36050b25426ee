//! The contract between the host and its components: what a component's configuration
//! says about itself ([`Component`]), what the host gives every component it starts
//! ([`ComponentContext`]), and why starting one fails ([`StartError`]).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::adapter::{Adapter, AdapterError, AdapterRuntime, AdapterSource, Role};
use crate::bus::Bus;
use crate::config::{HostConfig, Problems};
use crate::pipeline::{PipelineHandOff, Recorder};
use crate::readiness::Readiness;
use crate::routing::{ComponentId, Routes};
use crate::shutdown::Shutdown;

/// What every component says about its adapter.
pub trait Component {
    /// The component's `type` as written in the file.
    fn type_name(&self) -> &'static str;
    /// The adapter it maps through, if any.
    fn adapter(&self) -> Option<&AdapterSource>;
    /// A dedicated port, when it does not share the host listener.
    fn port(&self) -> Option<u16> {
        None
    }
    /// Type-specific checks, reported under `path`.
    fn validate(&self, path: &str, problems: &mut Problems);
}

/// What every component gets from the host.
#[derive(Debug, Clone)]
pub struct ComponentContext {
    /// The component's id, stamped on the events it publishes.
    pub id: ComponentId,
    /// Its configured name.
    pub name: Arc<str>,
    /// Where it publishes events.
    pub bus: Bus,
    /// The live routes.
    pub routes: Arc<Routes>,
    /// Where deliveries are recorded.
    pub recorder: Arc<Recorder>,
    /// Loads its adapter.
    pub adapters: AdapterRuntime,
    /// The shutdown stages.
    pub shutdown: Shutdown,
    /// Process-wide settings: limits, instance id.
    pub host: Arc<HostConfig>,
    /// Where it reports whether it is ready.
    pub readiness: Arc<Readiness>,
    /// The pipeline, for a component that delivers its own events.
    pub pipeline: PipelineHandOff,
}

impl ComponentContext {
    /// Loads the component's adapter for `role`, configured with `settings`, and has
    /// `/readyz` report it while its calls keep failing.
    ///
    /// # Errors
    /// The adapter cannot be read, compiled, linked or configured.
    pub fn load_adapter(
        &self,
        source: &AdapterSource,
        role: Role,
        settings: &BTreeMap<String, String>,
    ) -> Result<Adapter, AdapterError> {
        let adapter = self.adapters.load(&self.name, source, role, settings)?;
        self.readiness.watch_adapter(adapter.clone());
        Ok(adapter)
    }

    /// True when routes leave the component, so that it consumes. A reload can change
    /// the routes: ask again rather than keep the answer.
    #[must_use]
    pub fn is_routed(&self) -> bool {
        !self.routes.snapshot().from_source(self.id).is_empty()
    }

    /// The ordering key of what the component consumes from `stream` (a queue, a
    /// partition, a link): the events of one key keep their order through the bus.
    #[must_use]
    pub fn ordering_key(&self, stream: impl Hash) -> u64 {
        let mut hasher = DefaultHasher::new();
        (&*self.name, stream).hash(&mut hasher);
        hasher.finish()
    }

    /// A start error for a setting of endpoint `self` that cannot be used.
    #[must_use]
    pub fn refuse(&self, message: impl std::fmt::Display) -> StartError {
        StartError::Runtime(format!("endpoints.{}: {message}", self.name))
    }

    /// The span of endpoint `self`'s task, of type `type_name`: every line the task
    /// logs says which endpoint.
    #[must_use]
    pub fn endpoint_span(&self, type_name: &'static str) -> tracing::Span {
        tracing::info_span!("endpoint", component_kind = "endpoint", component_type = type_name, component_id = %self.name)
    }
}

/// Why the host did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An adapter could not be loaded.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The WebAssembly runtime or the route table could not be set up.
    #[error("cannot start: {0}")]
    Runtime(String),
}
