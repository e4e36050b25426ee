//! The WebAssembly adapter runtime: the one place the host embeds WebAssembly.
//!
//! Each adapter is compiled once at startup and kept as an `InstancePre`. Calls take
//! an instance from a small pool (one `Store` serves one caller at a time) and give it
//! back afterwards; an instance that trapped, or that served `recycle_after_calls`
//! calls, is dropped and replaced by a fresh one. Every call runs under an epoch
//! deadline and a memory cap, so a guest that loops, traps or allocates without bound
//! fails its batch, is counted and logged, and the host keeps serving.

mod batch;
mod builtin;
mod wasi;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};

use crate::config::{AdapterRuntimeConfig, Problems};
use crate::routing::Direction;

pub use batch::{Mapped, encode_events, from_item, parse_output};
pub use bindings::mediation::adapter::types::{CallContext, Directions, ErrorKind, Info, ItemError, Role, Session};
pub use builtin::BUILTIN_NAMES;

/// The generated bindings of the `adapter` world; the host's only `bindgen!`.
mod bindings {
    wasmtime::component::bindgen!({
        world: "adapter",
        path: "../wit",
    });
}

use bindings::mediation::adapter::types::{Batch, Outcome};

/// How often the epoch advances. Deadlines are whole ticks, so a call may overrun
/// its budget by up to one tick.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Where an adapter's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterSource {
    /// One of the default adapters built into the binary: `builtin:kafka`.
    Builtin(String),
    /// An operator's component file. Relative paths are resolved against the
    /// directory of the configuration file.
    File(PathBuf),
}

impl<'de> Deserialize<'de> for AdapterSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.strip_prefix("builtin:") {
            Some(name) => Self::Builtin(name.to_owned()),
            None => Self::File(PathBuf::from(text)),
        })
    }
}

impl std::fmt::Display for AdapterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin(name) => write!(f, "builtin:{name}"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl AdapterSource {
    /// Makes a relative file path absolute against `base`.
    pub fn resolve(&mut self, base: &Path) {
        if let Self::File(path) = self
            && path.is_relative()
        {
            *path = base.join(&*path);
        }
    }

    /// Checks that a builtin exists or that a file is there.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        match self {
            Self::Builtin(name) => problems.check(
                builtin::bytes(name).is_some(),
                path,
                format!("no builtin adapter `{name}` (builtins: {})", BUILTIN_NAMES.join(", ")),
            ),
            Self::File(file) => {
                problems.check(file.is_file(), path, format!("adapter file {} does not exist", file.display()))
            }
        }
    }
}

/// Why an adapter could not be loaded or a call failed. Load errors stop startup;
/// call errors fail one batch.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The bytes are not a component, or the file cannot be read.
    #[error("adapter {name} ({source_name}): {message}")]
    Load {
        /// The component using the adapter.
        name: String,
        /// Where the adapter came from.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// The guest trapped: a panic, an out-of-bounds access, an explicit abort.
    #[error("adapter {name} trapped: {message}")]
    Trap {
        /// The component using the adapter.
        name: String,
        /// The trap and any captured panic message.
        message: String,
    },
    /// The guest ran past its deadline and was stopped.
    #[error("adapter {name} ran past its {timeout_ms} ms deadline and was stopped")]
    Timeout {
        /// The component using the adapter.
        name: String,
        /// The deadline.
        timeout_ms: u64,
    },
    /// The guest tried to grow its memory past the cap.
    #[error("adapter {name} exceeded its memory limit of {limit_bytes} bytes")]
    OutOfMemory {
        /// The component using the adapter.
        name: String,
        /// The cap.
        limit_bytes: usize,
    },
    /// The guest returned something that breaks the contract (bad layout, wrong counts).
    #[error("adapter {name} returned an invalid batch: {message}")]
    InvalidOutput {
        /// The component using the adapter.
        name: String,
        /// What was wrong.
        message: String,
    },
}

impl AdapterError {
    /// The `reason` label for `/metrics`.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Load { .. } => "load",
            Self::Trap { .. } => "trap",
            Self::Timeout { .. } => "timeout",
            Self::OutOfMemory { .. } => "memory",
            Self::InvalidOutput { .. } => "invalid_output",
        }
    }
}

/// What a guest's store holds: the sandbox's WASI state and the limits.
struct GuestState {
    /// No files, no environment, no network; stdout and stderr captured.
    sandbox: wasi::Sandbox,
    /// The memory and table caps.
    limiter: Limiter,
    /// The adapter's component name, for its log lines.
    name: Arc<str>,
}

impl wasi::HasSandbox for GuestState {
    fn sandbox(&mut self) -> &mut wasi::Sandbox {
        &mut self.sandbox
    }
}

/// The store's limits, remembering whether a memory growth was refused so that a
/// trap can be reported as what it is: the guest ran out of its memory budget.
struct Limiter {
    /// The caps themselves.
    limits: StoreLimits,
    /// Set when the guest asked for more memory than the cap.
    memory_denied: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let granted = self.limits.memory_growing(current, desired, maximum);
        if !matches!(granted, Ok(true)) {
            self.memory_denied = true;
        }
        granted
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl bindings::mediation::adapter::types::Host for GuestState {}

impl bindings::AdapterImports for GuestState {
    fn log(&mut self, level: u8, message: String) {
        let adapter = &*self.name;
        match level {
            0 => tracing::error!(adapter, "{message}"),
            1 => tracing::warn!(adapter, "{message}"),
            2 => tracing::info!(adapter, "{message}"),
            _ => tracing::debug!(adapter, "{message}"),
        }
    }
}

/// The shared engine, linker and epoch ticker.
#[derive(Clone)]
pub struct AdapterRuntime {
    /// Compiles and runs every adapter; its epoch drives call deadlines.
    engine: Engine,
    /// WASI (locked down) plus the host's `log` import.
    linker: Arc<Linker<GuestState>>,
    /// The sandbox limits.
    config: AdapterRuntimeConfig,
}

impl std::fmt::Debug for AdapterRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterRuntime").field("config", &self.config).finish_non_exhaustive()
    }
}

impl AdapterRuntime {
    /// An engine with epoch interruption and a thread that advances the epoch for as
    /// long as the runtime lives.
    ///
    /// # Errors
    /// When the engine or the linker cannot be set up, which is a host bug.
    pub fn new(config: &AdapterRuntimeConfig) -> wasmtime::Result<Self> {
        let mut engine_config = wasmtime::Config::new();
        engine_config.epoch_interruption(true);
        let engine = Engine::new(&engine_config)?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker)?;
        bindings::Adapter::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |state| state)?;
        let weak = engine.weak();
        std::thread::Builder::new().name(String::from("adapter-epoch")).spawn(move || {
            // Stops once every clone of the engine is gone.
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
        Ok(Self { engine, linker: Arc::new(linker), config: config.clone() })
    }

    /// Compiles the adapter for component `name`, checks it against the world and its
    /// expected `role`, and configures one instance with `settings` to prove they are
    /// accepted.
    ///
    /// # Errors
    /// [`AdapterError::Load`] naming the component, the source, and what is wrong: not
    /// a component, a missing export or import, the wrong role, refused settings.
    pub fn load(
        &self,
        name: &str,
        source: &AdapterSource,
        role: Role,
        settings: &BTreeMap<String, String>,
    ) -> Result<Adapter, AdapterError> {
        let load_error =
            |message: String| AdapterError::Load { name: name.to_owned(), source_name: source.to_string(), message };
        let component = match source {
            AdapterSource::Builtin(builtin) => {
                let bytes =
                    builtin::bytes(builtin).ok_or_else(|| load_error(String::from("no such builtin adapter")))?;
                Component::new(&self.engine, bytes)
            }
            AdapterSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| load_error(format!("cannot read: {e}")))?;
                if !bytes.starts_with(b"\0asm") {
                    return Err(load_error(String::from("not a WebAssembly binary (no \\0asm header)")));
                }
                Component::new(&self.engine, bytes)
            }
        }
        .map_err(|e| load_error(format!("not a loadable component: {}", root_cause(&e))))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| load_error(format!("does not fit the mediation:adapter world: {}", root_cause(&e))))?;
        let pre = bindings::AdapterPre::new(pre).map_err(|e| {
            load_error(format!("does not export the mediation:adapter/mapping interface: {}", root_cause(&e)))
        })?;
        let adapter = Adapter {
            shared: Arc::new(Shared {
                name: Arc::from(name),
                pre,
                engine: self.engine.clone(),
                config: self.config.clone(),
                settings: settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                pool: Mutex::new(Vec::new()),
                stats: AdapterStats::default(),
                info: Mutex::new(None),
            }),
        };
        let mut instance = adapter.instantiate().map_err(|e| match e {
            // `configure` refused the settings: its message says which.
            AdapterError::Load { message, .. } => load_error(message),
            other => load_error(other.to_string()),
        })?;
        let info = instance
            .bindings
            .mediation_adapter_mapping()
            .call_describe(&mut instance.store)
            .map_err(|e| load_error(format!("describe failed: {}", root_cause(&e))))?;
        if info.role != role {
            return Err(load_error(format!(
                "is an {} adapter, but is used as an {}",
                role_name(info.role),
                role_name(role)
            )));
        }
        *adapter.shared.info.lock().unwrap_or_else(PoisonError::into_inner) = Some(info);
        adapter.give_back(instance);
        Ok(adapter)
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Entrypoint => "entrypoint",
        Role::Endpoint => "endpoint",
    }
}

/// The innermost error message, which is where wasmtime says what actually failed.
fn root_cause(e: &wasmtime::Error) -> String {
    e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

/// Calls and failures of one adapter, for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct AdapterStats {
    /// Mapping calls made.
    pub calls: AtomicU64,
    /// Calls that trapped.
    pub traps: AtomicU64,
    /// Calls stopped at their deadline.
    pub timeouts: AtomicU64,
    /// Calls that hit the memory cap.
    pub out_of_memory: AtomicU64,
    /// Calls that returned a batch breaking the contract.
    pub invalid_output: AtomicU64,
    /// Items the adapter refused (malformed, unsupported, too large).
    pub item_errors: AtomicU64,
    /// Failed calls since the last success; `/readyz` fails at `failing_after`.
    pub consecutive_failures: AtomicU32,
}

/// A loaded adapter. Cheap to clone; clones share the compiled component and pool.
#[derive(Clone)]
pub struct Adapter {
    /// Everything the clones share.
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter").field("name", &self.shared.name).finish_non_exhaustive()
    }
}

struct Shared {
    /// The component that uses this adapter, for logs and metrics.
    name: Arc<str>,
    /// The compiled, linked component, ready to instantiate.
    pre: bindings::AdapterPre<GuestState>,
    /// The engine, to make stores.
    engine: Engine,
    /// The sandbox limits.
    config: AdapterRuntimeConfig,
    /// Passed to `configure` on every new instance.
    settings: Vec<(String, String)>,
    /// Idle instances, at most `pool_size`.
    pool: Mutex<Vec<Instance>>,
    /// Call and failure counters.
    stats: AdapterStats,
    /// What the adapter said it is, once loaded.
    info: Mutex<Option<Info>>,
}

/// One instantiated guest and the store it lives in.
struct Instance {
    store: Store<GuestState>,
    bindings: bindings::Adapter,
    /// Calls served, for recycling.
    calls: u64,
}

impl Adapter {
    /// The component name the adapter serves.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Call and failure counters.
    #[must_use]
    pub fn stats(&self) -> &AdapterStats {
        &self.shared.stats
    }

    /// True when the last `failing_after` calls all failed.
    #[must_use]
    pub fn is_failing(&self) -> bool {
        self.shared.stats.consecutive_failures.load(Ordering::Relaxed) >= self.shared.config.failing_after
    }

    /// True when the adapter's output depends on the client session.
    #[must_use]
    pub fn session_dependent(&self) -> bool {
        self.shared.info.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|i| i.session_dependent)
    }

    /// True when the adapter maps every direction in `needed`.
    #[must_use]
    pub fn maps(&self, needed: Directions) -> bool {
        self.shared
            .info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|i| i.maps.contains(needed))
    }

    fn instantiate(&self) -> Result<Instance, AdapterError> {
        let shared = &self.shared;
        let limits = StoreLimitsBuilder::new()
            .memory_size(shared.config.memory_limit_bytes)
            .instances(16)
            .tables(16)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        let limiter = Limiter { limits, memory_denied: false };
        let state = GuestState { sandbox: wasi::Sandbox::default(), limiter, name: Arc::clone(&shared.name) };
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        self.arm_deadline(&mut store);
        let bindings = shared.pre.instantiate(&mut store).map_err(|e| self.classify(&e, &mut store))?;
        self.arm_deadline(&mut store);
        bindings
            .mediation_adapter_mapping()
            .call_configure(&mut store, &shared.settings)
            .map_err(|e| self.classify(&e, &mut store))?
            .map_err(|message| AdapterError::Load {
                name: shared.name.to_string(),
                source_name: String::from("configure"),
                message: format!("refused its settings: {message}"),
            })?;
        Ok(Instance { store, bindings, calls: 0 })
    }

    fn arm_deadline(&self, store: &mut Store<GuestState>) {
        let ticks = self.shared.config.call_timeout_ms.div_ceil(u64::try_from(EPOCH_TICK.as_millis()).unwrap_or(1));
        store.set_epoch_deadline(ticks.max(1));
    }

    fn classify(&self, e: &wasmtime::Error, store: &mut Store<GuestState>) -> AdapterError {
        let name = self.shared.name.to_string();
        let stats = &self.shared.stats;
        let text = root_cause(e);
        let error = match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
                AdapterError::Timeout { name, timeout_ms: self.shared.config.call_timeout_ms }
            }
            _ if store.data().limiter.memory_denied => {
                stats.out_of_memory.fetch_add(1, Ordering::Relaxed);
                AdapterError::OutOfMemory { name, limit_bytes: self.shared.config.memory_limit_bytes }
            }
            _ => {
                stats.traps.fetch_add(1, Ordering::Relaxed);
                let output = store.data_mut().sandbox.take_output();
                let message = if output.is_empty() { text } else { format!("{text}; guest output: {output}") };
                AdapterError::Trap { name, message }
            }
        };
        tracing::warn!(adapter = %self.shared.name, error = %error, "adapter call failed; the batch fails, the host keeps serving");
        error
    }

    fn give_back(&self, instance: Instance) {
        let shared = &self.shared;
        if instance.calls >= shared.config.recycle_after_calls {
            return;
        }
        let mut pool = shared.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < shared.config.pool_size {
            pool.push(instance);
        }
    }

    /// Runs one mapping call on a raw batch.
    ///
    /// # Errors
    /// The call failed as a whole: trap, deadline, memory cap, or an output that
    /// breaks the contract. Per-item refusals are not errors; they are in the outcome.
    pub fn call(
        &self,
        direction: Direction,
        ctx: &CallContext,
        data: Vec<u8>,
        index: Vec<u32>,
    ) -> Result<(Vec<u8>, Vec<u32>, Outcome), AdapterError> {
        let shared = &self.shared;
        shared.stats.calls.fetch_add(1, Ordering::Relaxed);
        let pooled = shared.pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => self.instantiate().inspect_err(|_| self.failed())?,
        };
        self.arm_deadline(&mut instance.store);
        let input = Batch { data, index };
        let mapping = instance.bindings.mediation_adapter_mapping();
        let result = match direction {
            Direction::Upstream => mapping.call_upstream(&mut instance.store, ctx, &input),
            Direction::Downstream => mapping.call_downstream(&mut instance.store, ctx, &input),
        };
        match result {
            Ok((output, outcome)) => {
                instance.calls += 1;
                let printed = instance.store.data_mut().sandbox.take_output();
                if !printed.is_empty() {
                    tracing::debug!(adapter = %shared.name, output = %printed, "adapter wrote to stdout or stderr");
                }
                self.give_back(instance);
                Ok((output.data, output.index, outcome))
            }
            Err(e) => {
                // The instance is dropped: a trapped store must not serve again.
                let error = self.classify(&e, &mut instance.store);
                self.failed();
                Err(error)
            }
        }
    }

    fn failed(&self) {
        self.shared.stats.consecutive_failures.fetch_add(1, Ordering::Relaxed);
    }

    fn succeeded(&self) {
        self.shared.stats.consecutive_failures.store(0, Ordering::Relaxed);
    }

    fn invalid(&self, message: String) -> AdapterError {
        self.shared.stats.invalid_output.fetch_add(1, Ordering::Relaxed);
        self.failed();
        let error = AdapterError::InvalidOutput { name: self.shared.name.to_string(), message };
        tracing::warn!(adapter = %self.shared.name, error = %error, "adapter output refused; the batch fails");
        error
    }
}

/// A call context with no session, for endpoint adapters.
#[must_use]
pub fn route_context(route: u32) -> CallContext {
    CallContext { route, session: None }
}
