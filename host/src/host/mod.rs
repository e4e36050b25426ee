//! Wiring: builds every component from the configuration, starts the bus workers and
//! listeners, reloads routes, and shuts down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

mod file;

#[cfg(test)]
pub(crate) use self::file::endpoint_problems;
pub use self::file::{Config, validate_reload};

use crate::adapter::{AdapterError, AdapterRuntime, Role};
use crate::admin;
use crate::bus::Bus;
use crate::component::{Component, ComponentContext, StartError};
use crate::config::{ConfigError, Problem};
use crate::endpoints::Endpoint;
use crate::entrypoints;
use crate::packet_log::{PacketLog, Sink};
use crate::pipeline::{Pipeline, PipelineHandOff, Recorder, TargetSender};
use crate::readiness::Readiness;
use crate::routing::{ComponentId, Components, RouteTable, Routes};
use crate::shutdown::Shutdown;

/// Loads and configures every component's adapter the way [`Host::start`] does,
/// without starting anything, so that `check` refuses what `run` would refuse: a file
/// that is not a component, the wrong world or role, settings `configure` rejects.
///
/// # Errors
/// Every adapter that would not load, each under its component's TOML path.
pub fn check_adapters(config: &Config) -> Result<(), ConfigError> {
    let runtime = AdapterRuntime::new(&config.adapters).map_err(|e| ConfigError {
        file: None,
        problems: vec![Problem { path: String::from("adapters"), message: e.to_string() }],
    })?;
    let mut problems = Vec::new();
    for (name, e) in &config.entrypoints {
        let source = e.adapter_source();
        let loaded = runtime.load(name, &source, Role::Entrypoint, &e.common.adapter_settings).and_then(|adapter| {
            e.fit(&adapter).map_err(|message| AdapterError::Load {
                name: name.clone(),
                source_name: source.to_string(),
                message,
            })
        });
        if let Err(e) = loaded {
            problems.push(Problem { path: format!("entrypoints.{name}.adapter"), message: e.to_string() });
        }
    }
    for (name, e) in &config.endpoints {
        let loaded = e.adapter_load().and_then(|adapter| match adapter {
            Some((source, settings)) => {
                runtime.load(name, &source, Role::Endpoint, &settings).map(drop).map_err(|e| e.to_string())
            }
            None => Ok(()),
        });
        if let Err(message) = loaded {
            problems.push(Problem { path: format!("endpoints.{name}.adapter"), message });
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(ConfigError { file: None, problems }) }
}

/// A running host.
#[derive(Debug)]
pub struct Host {
    /// The configuration the components were built from; reloads change only routes.
    config: Config,
    /// The registry of components.
    components: Arc<Components>,
    /// The live routes, swapped on reload.
    routes: Arc<Routes>,
    /// The host's own publisher handle, dropped at shutdown so the bus can drain.
    bus: Option<Bus>,
    /// The shutdown stages.
    shutdown: Shutdown,
    /// Bus workers.
    workers: JoinSet<()>,
    /// Target tasks (endpoints), which finish once their queues close.
    targets: JoinSet<()>,
    /// Listeners (entrypoints, admin).
    listeners: JoinSet<()>,
    /// The pipeline, holding the target queues; dropped at shutdown to close them.
    pipeline: Option<Pipeline>,
    /// The bound admin address.
    admin_addr: SocketAddr,
    /// The bound entrypoint listener address, when there are entrypoints.
    listen_addr: Option<SocketAddr>,
    /// Readiness of every component and adapter.
    readiness: Arc<Readiness>,
}

impl Host {
    /// Builds and starts everything `config` describes, writing packet lines to `sink`.
    ///
    /// # Errors
    /// When an adapter cannot be loaded or a listener cannot bind.
    pub async fn start(config: Config, sink: Sink) -> Result<Self, StartError> {
        let components = Arc::new(config.components());
        let table = RouteTable::build(&components, &config.routes, None).map_err(|e| {
            // `Config::validate` refuses such routes with their paths first.
            StartError::Runtime(format!("routes: {e}"))
        })?;
        let routes = Arc::new(Routes::new(table));
        let packet_log = Arc::new(PacketLog::new(&config.packet_log, sink));
        let recorder = Arc::new(Recorder::new(Arc::clone(&components), packet_log));
        let (bus, shards) = Bus::new(&config.bus);
        let adapters = AdapterRuntime::new(&config.adapters)
            .map_err(|e| StartError::Runtime(format!("the adapter runtime: {e}")))?;
        let readiness = Arc::new(Readiness::default());
        readiness.watch_bus(bus.pressure());
        let shutdown = Shutdown::default();
        let host_config = Arc::new(config.host.clone());
        let hand_off = PipelineHandOff::default();
        let context = |name: &str| ComponentContext {
            id: components.id(name).unwrap_or(ComponentId(u32::MAX)),
            name: Arc::from(name),
            bus: bus.clone(),
            routes: Arc::clone(&routes),
            recorder: Arc::clone(&recorder),
            adapters: adapters.clone(),
            shutdown: shutdown.clone(),
            host: Arc::clone(&host_config),
            readiness: Arc::clone(&readiness),
            pipeline: hand_off.clone(),
        };

        let mut targets_by_id: Vec<Option<TargetSender>> = vec![None; components.len()];
        let mut targets = JoinSet::new();
        for (name, endpoint) in &config.endpoints {
            let ctx = context(name);
            let id = ctx.id;
            let (sender, task) = endpoint.spawn(ctx)?;
            targets_by_id[id.0 as usize] = Some(sender);
            targets.spawn(async move {
                // A panicking target is a bug; say so instead of vanishing.
                if let Err(e) = task.await {
                    tracing::error!(error = %e, "endpoint task failed");
                }
            });
        }
        let mut listeners = JoinSet::new();
        let listen_addr = entrypoints::start(
            &config.entrypoints,
            &config.host,
            &context,
            &mut targets_by_id,
            &mut targets,
            &mut listeners,
        )
        .await?;

        let pipeline = Pipeline::new(
            Arc::clone(&routes),
            targets_by_id,
            Arc::clone(&recorder),
            Duration::from_millis(config.bus.publish_timeout_ms),
        );
        hand_off.fulfil(&pipeline);
        let mut workers = JoinSet::new();
        for shard in shards {
            workers.spawn(pipeline.clone().run_shard(shard, shutdown.sources.clone()));
        }

        let admin_state = admin::AdminState {
            readiness: Arc::clone(&readiness),
            routes: Arc::clone(&routes),
            recorder: Arc::clone(&recorder),
            bus: bus.clone(),
        };
        let admin_addr = admin::serve(config.host.admin_listen, admin_state, shutdown.accept.clone(), &mut listeners)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.host.admin_listen,
                what: String::from("admin"),
                source,
            })?;
        readiness.set_started();
        tracing::info!(%admin_addr, entrypoints = ?listen_addr, shards = bus.shards(), "mediation host started");
        Ok(Self {
            config,
            components,
            routes,
            bus: Some(bus),
            shutdown,
            workers,
            targets,
            listeners,
            pipeline: Some(pipeline),
            admin_addr,
            listen_addr,
            readiness,
        })
    }

    /// The bound admin listener.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bound entrypoint listener, when there are entrypoints.
    #[must_use]
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// A publisher onto the bus, for components and tests.
    ///
    /// # Panics
    /// After shutdown began.
    #[must_use]
    pub fn bus(&self) -> Bus {
        self.bus.clone().expect("the host is running")
    }

    /// The id of component `name`.
    #[must_use]
    pub fn component(&self, name: &str) -> Option<ComponentId> {
        self.components.id(name)
    }

    /// Replaces the routes with those of `new`, if they are valid against the running
    /// components. Component changes need a restart and are reported, not applied.
    ///
    /// # Errors
    /// The problems in the new routes; the running routes stay.
    pub fn reload_routes(&self, new: &Config) -> Result<usize, ConfigError> {
        validate_reload(&self.config, &new.routes)?;
        let kinds = |c: &Config| -> Vec<(String, &'static str)> {
            let entrypoints = c.entrypoints.iter().map(|(n, e)| (n.clone(), e.type_name()));
            entrypoints.chain(c.endpoints.iter().map(|(n, e)| (n.clone(), e.type_name()))).collect()
        };
        if kinds(&self.config) != kinds(new) {
            // A truncated or half-written file must not take the routes away: a file
            // naming other components than the running ones is refused whole.
            let message = String::from(
                "the entrypoints and endpoints differ from the running ones (names or types); \
                 they change only at a restart, so the reload is refused",
            );
            return Err(ConfigError { file: None, problems: vec![Problem { path: String::new(), message }] });
        }
        if format!("{:?}{:?}", self.config.entrypoints, self.config.endpoints)
            != format!("{:?}{:?}", new.entrypoints, new.endpoints)
        {
            tracing::warn!("entrypoint or endpoint settings changed; they take effect at the next restart, routes now");
        }
        let previous = self.routes.snapshot();
        let table = RouteTable::build(&self.components, &new.routes, Some(&previous)).map_err(|message| {
            ConfigError { file: None, problems: vec![Problem { path: String::from("routes"), message }] }
        })?;
        self.routes.replace(table);
        Ok(new.routes.len())
    }

    /// Readiness as `/readyz` reports it.
    #[must_use]
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Shuts down in order, each stage bounded by the shutdown timeout: stop accepting
    /// and close clients, stop the sources, drain the bus, then let the targets flush.
    pub async fn shutdown(mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.host.shutdown_timeout_ms);
        self.readiness.set_stopping();
        self.shutdown.accept.cancel();
        drain("listeners", &mut self.listeners, deadline).await;
        self.shutdown.sources.cancel();
        self.bus = None;
        drain("bus workers", &mut self.workers, deadline).await;
        self.pipeline = None;
        drain("endpoints", &mut self.targets, deadline).await;
        tracing::info!("mediation host stopped");
    }
}

/// Waits for `tasks` until `deadline`, then aborts what is left and says so.
async fn drain(what: &str, tasks: &mut JoinSet<()>, deadline: tokio::time::Instant) {
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(stage = what, left = tasks.len(), "shutdown deadline passed; stopping the rest");
                tasks.abort_all();
                return;
            }
        }
    }
}
