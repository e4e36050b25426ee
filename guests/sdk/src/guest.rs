//! What a guest component needs: the WIT bindings, the [`Adapter`] trait and the glue
//! that runs an adapter over a batch, item by item. [`testing`] helps adapter crates'
//! unit tests run an adapter the way the host does.

use crate::layout::{self, BatchBuilder, Item, Kind};

pub mod testing;

/// The bindings `wit-bindgen` generates for the `adapter` world.
#[allow(missing_docs, missing_debug_implementations, unsafe_code, unused_qualifications, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "adapter",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_bindings",
        default_bindings_module: "::mediation_adapter_sdk::guest::bindings",
    });
}

use bindings::mediation::adapter::types as wit;
pub use bindings::mediation::adapter::types::{CallContext, Directions, ErrorKind, Info, Role, Session};

/// Why one item produced no output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The class of failure; the host turns it into a status (400, 415, 413) or a close code.
    pub kind: ErrorKind,
    /// What is wrong, in words a client can act on.
    pub message: String,
}

impl ItemError {
    /// The item's bytes do not parse.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Malformed, message: message.into() }
    }

    /// The item is valid but this adapter does not handle it.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Unsupported, message: message.into() }
    }

    /// The item is larger than the adapter accepts.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::TooLarge, message: message.into() }
    }
}

/// The adapter's settings from the host configuration.
#[derive(Debug, Clone, Default)]
pub struct Settings(Vec<(String, String)>);

impl Settings {
    /// Settings from `(key, value)` pairs, as the host passes them.
    #[must_use]
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The value of `key`, if set.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `default`.
    #[must_use]
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// A comma-separated list, trimmed, empty entries dropped.
    #[must_use]
    pub fn list(&self, key: &str, default: &str) -> Vec<String> {
        self.get_or(key, default).split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
    }

    /// One of `choices`, or `default` when unset.
    ///
    /// # Errors
    /// When the value is none of `choices`, naming the setting and the choices.
    pub fn choice<'a>(&self, key: &str, choices: &[&'a str], default: &'a str) -> Result<&'a str, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => choices
                .iter()
                .find(|c| **c == v)
                .copied()
                .ok_or_else(|| format!("setting `{key}`: `{v}` is not one of {}", choices.join(", "))),
        }
    }

    /// Refuses settings this adapter does not know, the way the host's own
    /// configuration refuses unknown fields.
    ///
    /// # Errors
    /// Names the first unknown setting and lists the known ones.
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some((k, _)) => Err(format!("unknown setting `{k}` (known: {})", known.join(", "))),
        }
    }
}

/// The context of one call: the route and, for entrypoint adapters, the client session.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a>(&'a CallContext);

impl<'a> Context<'a> {
    /// Wraps the context the host passed.
    #[must_use]
    pub fn new(inner: &'a CallContext) -> Self {
        Self(inner)
    }

    /// The index of the route the batch travels on.
    #[must_use]
    pub fn route(&self) -> u32 {
        self.0.route
    }

    /// The client session, for entrypoint adapters.
    #[must_use]
    pub fn session(&self) -> Option<&'a Session> {
        self.0.session.as_ref()
    }

    /// A request header forwarded by Envoy, matched case-insensitively.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.session()?.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A query parameter of the client's request.
    #[must_use]
    pub fn query(&self, name: &str) -> Option<&'a str> {
        self.session()?.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The directions an adapter maps, as it tells the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maps {
    /// Client to broker only: decoding client frames, or mapping events to records.
    Upstream,
    /// Broker to client only: mapping records to events, or encoding client frames.
    Downstream,
    /// Both.
    Both,
}

impl Maps {
    /// The WIT flags for these directions.
    #[must_use]
    pub fn directions(self) -> Directions {
        match self {
            Self::Upstream => Directions::UPSTREAM,
            Self::Downstream => Directions::DOWNSTREAM,
            Self::Both => Directions::UPSTREAM | Directions::DOWNSTREAM,
        }
    }
}

/// An adapter: how one protocol's frames or records map to events and back.
///
/// The SDK calls `upstream` or `downstream` once per input item, in order. An item
/// may write zero, one or many outputs into `out`. When it returns an error, what it
/// wrote is rolled back and the error is reported for that item alone.
pub trait Adapter: Sized + Send + Sync + 'static {
    /// Entrypoint (client framing) or endpoint (broker records).
    const ROLE: Role;
    /// True when `downstream` output depends on the session, which makes the host
    /// encode once per client instead of once per event.
    const SESSION_DEPENDENT: bool = false;
    /// The directions the adapter maps (both unless it says otherwise). The host
    /// refuses it at startup where the other one is needed.
    const MAPS: Maps = Maps::Both;

    /// Builds the adapter from its settings.
    ///
    /// # Errors
    /// A message naming the bad setting; the host refuses to start with it.
    fn configure(settings: &Settings) -> Result<Self, String>;

    /// Client to broker: decode a client frame (entrypoint) or map an event to a
    /// broker record (endpoint).
    ///
    /// # Errors
    /// Why this item cannot be mapped.
    fn upstream(&self, ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        let _ = (ctx, item, out);
        Err(ItemError::unsupported("this adapter does not map upstream"))
    }

    /// Broker to client: map a broker record to an event (endpoint) or encode an
    /// event as a client frame (entrypoint).
    ///
    /// # Errors
    /// Why this item cannot be mapped.
    fn downstream(&self, ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        let _ = (ctx, item, out);
        Err(ItemError::unsupported("this adapter does not map downstream"))
    }
}

/// Refuses control items (subscribe, unsubscribe, ack, resume) in an adapter that maps
/// data items only, as most endpoint adapters do: control items are not records.
/// `adapter` names the adapter in the message (`the Kafka endpoint`).
///
/// # Errors
/// Unsupported for every item that is not a data item, naming the adapter and the
/// item's kind: `the Kafka endpoint maps data items only, not Subscribe items`.
pub fn data_only(item: &Item<'_>, adapter: &str) -> Result<(), ItemError> {
    match item.kind() {
        Kind::Data => Ok(()),
        kind => Err(ItemError::unsupported(format!("{adapter} maps data items only, not {kind:?} items"))),
    }
}

/// Which of an adapter's two mapping functions a batch goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to broker.
    Upstream,
    /// Broker to client.
    Downstream,
}

/// Runs `adapter` over every item of a batch, keeping the per-item counts and errors
/// the host needs to acknowledge exactly what succeeded. Adapter tests call it
/// directly with a batch built by [`BatchBuilder`].
#[must_use]
pub fn run<A: Adapter>(
    adapter: &A,
    direction: Direction,
    ctx: &CallContext,
    data: &[u8],
    index: &[u32],
) -> (BatchBuilder, wit::Outcome) {
    let mut out = BatchBuilder::with_capacity(index.len() / layout::ITEM_WORDS, data.len());
    let input = match layout::Batch::parse(data, index) {
        Ok(input) => input,
        Err(err) => {
            let error = wit::ItemError { item: 0, kind: ErrorKind::Malformed, message: format!("input batch: {err}") };
            return (out, wit::Outcome { produced: Vec::new(), errors: vec![error] });
        }
    };
    let ctx = Context::new(ctx);
    let mut produced = Vec::with_capacity(input.len());
    let mut errors = Vec::new();
    for (i, item) in input.iter().enumerate() {
        let mark = out.mark();
        let before = out.len();
        let result = match direction {
            Direction::Upstream => adapter.upstream(&ctx, &item, &mut out),
            Direction::Downstream => adapter.downstream(&ctx, &item, &mut out),
        };
        match result {
            Ok(()) => produced.push(u32::try_from(out.len() - before).unwrap_or(u32::MAX)),
            Err(err) => {
                out.rollback(mark);
                produced.push(0);
                let item = u32::try_from(i).unwrap_or(u32::MAX);
                errors.push(wit::ItemError { item, kind: err.kind, message: err.message });
            }
        }
    }
    (out, wit::Outcome { produced, errors })
}

/// Writes a line to the host's log at `level` (0 error, 1 warn, 2 info, 3 debug).
#[cfg(target_arch = "wasm32")]
pub fn log(level: u8, message: &str) {
    bindings::log(level, message);
}

/// Outside WebAssembly (the adapter's own unit tests) there is no host to log to.
#[cfg(not(target_arch = "wasm32"))]
pub fn log(level: u8, message: &str) {
    let _ = (level, message);
}

/// Exports `$adapter` (a type implementing [`Adapter`]) as the component's `mapping`
/// interface. Use it once, in the adapter crate's `lib.rs`. It expands to nothing
/// outside WebAssembly, so the crate's unit tests build and link natively.
#[macro_export]
macro_rules! export_adapter {
    ($adapter:ty) => {
        // Only a WebAssembly build exports the interface: the export symbols' names
        // (`mediation:adapter/mapping@0.1.0#upstream`) do not link on native targets,
        // where the adapter's own unit tests run.
        #[cfg(target_arch = "wasm32")]
        $crate::__export_adapter_wasm!($adapter);
    };
}

/// The expansion of [`export_adapter!`] on WebAssembly.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_adapter_wasm {
    ($adapter:ty) => {
        static __MEDIATION_ADAPTER: ::std::sync::OnceLock<$adapter> = ::std::sync::OnceLock::new();

        struct __MediationExport;

        impl $crate::guest::bindings::exports::mediation::adapter::mapping::Guest for __MediationExport {
            fn describe() -> $crate::guest::Info {
                $crate::guest::Info {
                    role: <$adapter as $crate::guest::Adapter>::ROLE,
                    session_dependent: <$adapter as $crate::guest::Adapter>::SESSION_DEPENDENT,
                    maps: <$adapter as $crate::guest::Adapter>::MAPS.directions(),
                }
            }

            fn configure(settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> Result<(), ::std::string::String> {
                let adapter = <$adapter as $crate::guest::Adapter>::configure(&$crate::guest::Settings::new(settings))?;
                __MEDIATION_ADAPTER.set(adapter).map_err(|_| ::std::string::String::from("adapter is already configured"))
            }

            fn upstream(
                ctx: $crate::guest::CallContext,
                input: $crate::guest::bindings::mediation::adapter::types::Batch,
            ) -> (
                $crate::guest::bindings::mediation::adapter::types::Batch,
                $crate::guest::bindings::mediation::adapter::types::Outcome,
            ) {
                $crate::guest::call(__MEDIATION_ADAPTER.get(), $crate::guest::Direction::Upstream, &ctx, input)
            }

            fn downstream(
                ctx: $crate::guest::CallContext,
                input: $crate::guest::bindings::mediation::adapter::types::Batch,
            ) -> (
                $crate::guest::bindings::mediation::adapter::types::Batch,
                $crate::guest::bindings::mediation::adapter::types::Outcome,
            ) {
                $crate::guest::call(__MEDIATION_ADAPTER.get(), $crate::guest::Direction::Downstream, &ctx, input)
            }
        }

        $crate::guest::bindings::export_bindings!(__MediationExport with_types_in $crate::guest::bindings);
    };
}

/// The body of an exported mapping function; `None` when the host skipped `configure`.
#[doc(hidden)]
#[must_use]
pub fn call<A: Adapter>(
    adapter: Option<&A>,
    direction: Direction,
    ctx: &CallContext,
    input: wit::Batch,
) -> (wit::Batch, wit::Outcome) {
    let Some(adapter) = adapter else {
        let error = wit::ItemError {
            item: 0,
            kind: ErrorKind::Unsupported,
            message: String::from("adapter used before configure"),
        };
        return (
            wit::Batch { data: Vec::new(), index: Vec::new() },
            wit::Outcome { produced: Vec::new(), errors: vec![error] },
        );
    };
    let (out, outcome) = run(adapter, direction, ctx, &input.data, &input.index);
    let (data, index) = out.into_parts();
    (wit::Batch { data, index }, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Batch;

    #[test]
    fn data_only_refuses_control_items_naming_the_adapter_and_the_kind() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"record");
        input.item(Kind::Ack).sequence(3);
        input.item(Kind::Resume).sequence(4);
        let (data, index) = input.into_parts();
        let input = Batch::parse(&data, &index).expect("valid batch");
        assert_eq!(data_only(&input.get(0), "the Test endpoint"), Ok(()));
        assert_eq!(
            data_only(&input.get(1), "the Test endpoint"),
            Err(ItemError::unsupported("the Test endpoint maps data items only, not Ack items"))
        );
        assert_eq!(
            data_only(&input.get(2), "the Test endpoint"),
            Err(ItemError::unsupported("the Test endpoint maps data items only, not Resume items"))
        );
    }
}
