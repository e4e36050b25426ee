//! The adapter sandbox: what the host accepts as an adapter, and how it survives a
//! guest that loops, traps or allocates without bound.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use mediation_host::adapter::{AdapterError, AdapterRuntime, AdapterSource, BUILTIN_NAMES, Role, route_context};
use mediation_host::config::AdapterRuntimeConfig;
use mediation_host::event::{Event, Header};
use mediation_host::routing::ComponentId;
use mediation_host::routing::Direction;

fn runtime() -> AdapterRuntime {
    let config = AdapterRuntimeConfig { call_timeout_ms: 200, memory_limit_bytes: 16 << 20, ..Default::default() };
    AdapterRuntime::new(&config).expect("runtime")
}

fn file(path: &str) -> AdapterSource {
    AdapterSource::File(PathBuf::from(path))
}

fn event(payload: &'static str) -> Event {
    let mut e = Event::new(ComponentId(0), Bytes::from_static(payload.as_bytes()));
    e.headers.push(Header::new("x-trace", "t1"));
    e
}

fn load_error(source: &AdapterSource, role: Role) -> String {
    match runtime().load("orders", source, role, &BTreeMap::new()) {
        Err(e @ AdapterError::Load { .. }) => e.to_string(),
        other => panic!("expected a load error, got {other:?}"),
    }
}

#[test]
fn every_builtin_loads_in_its_role_and_is_refused_in_the_other() {
    let runtime = runtime();
    for name in BUILTIN_NAMES {
        let role = if ["websocket", "sse", "http-get", "http-post"].contains(&name) {
            Role::Entrypoint
        } else {
            Role::Endpoint
        };
        let source = AdapterSource::Builtin(name.to_string());
        runtime.load(name, &source, role, &BTreeMap::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let wrong = load_error(&AdapterSource::Builtin(String::from("kafka")), Role::Entrypoint);
    assert!(wrong.contains("is an endpoint adapter, but is used as an entrypoint"), "{wrong}");
}

#[test]
fn files_that_are_not_adapters_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        AdapterSource::File(path)
    };

    let text = write("notes.wasm", b"hello");
    let e = load_error(&text, Role::Endpoint);
    assert!(e.contains("notes.wasm") && e.contains("not a WebAssembly binary"), "{e}");

    let module = write("module.wasm", &wat::parse_str("(module)").expect("wat"));
    let e = load_error(&module, Role::Endpoint);
    assert!(e.contains("module.wasm") && e.contains("not a loadable component"), "{e}");

    let empty = write("empty.wasm", &wat::parse_str("(component)").expect("wat"));
    let e = load_error(&empty, Role::Endpoint);
    assert!(e.contains("empty.wasm") && e.contains("mediation:adapter/mapping"), "names what is missing: {e}");

    let missing = load_error(&file("/nonexistent/adapter.wasm"), Role::Endpoint);
    assert!(missing.contains("/nonexistent/adapter.wasm") && missing.contains("cannot read"), "{missing}");
}

#[test]
fn refused_settings_stop_the_load_with_the_adapters_message() {
    let settings = BTreeMap::from([(String::from("volume"), String::from("11"))]);
    let e = runtime()
        .load("loud", &file(env!("MEDIATION_EXAMPLE_ADAPTER")), Role::Endpoint, &settings)
        .expect_err("unknown setting");
    assert!(e.to_string().contains("unknown setting `volume`"), "{e}");
}

#[test]
fn the_example_adapter_maps_each_event() {
    let adapter = runtime()
        .load("loud", &file(env!("MEDIATION_EXAMPLE_ADAPTER")), Role::Endpoint, &BTreeMap::new())
        .expect("loads");
    let mapped = adapter
        .map(Direction::Upstream, &route_context(0), vec![event("hello"), event("again")])
        .expect("the call succeeds");
    let payloads: Vec<_> = mapped.outputs.iter().map(|e| e.payload.clone()).collect();
    assert_eq!(payloads, vec![Bytes::from_static(b"HELLO"), Bytes::from_static(b"AGAIN")]);
    let headers: Vec<_> = mapped.outputs[0].headers.iter().map(|h| (h.name.to_string(), h.value.clone())).collect();
    assert_eq!(
        headers,
        vec![
            (String::from("x-trace"), Bytes::from_static(b"t1")),
            (String::from("x-shouted"), Bytes::from_static(b"yes"))
        ]
    );
}

#[test]
fn a_hostile_guest_fails_its_batch_and_the_next_call_is_served() {
    let adapter = runtime()
        .load("hostile", &file(env!("MEDIATION_MISBEHAVE_ADAPTER")), Role::Endpoint, &BTreeMap::new())
        .expect("loads");
    let call = |payload: &'static str| adapter.map(Direction::Upstream, &route_context(0), vec![event(payload)]);

    let (inputs, e) = call("loop").expect_err("stopped");
    assert!(matches!(e, AdapterError::Timeout { timeout_ms: 200, .. }), "{e}");
    assert_eq!(inputs.len(), 1, "the input comes back to be failed or retried");

    let (_, e) = call("panic").expect_err("trapped");
    assert!(matches!(e, AdapterError::Trap { .. }) && e.to_string().contains("asked to panic"), "{e}");

    let (_, e) = call("oom").expect_err("capped");
    assert!(matches!(e, AdapterError::OutOfMemory { limit_bytes, .. } if limit_bytes == 16 << 20), "{e}");

    let fine = call("fine").expect("served after all of that");
    assert_eq!(fine.outputs[0].payload, Bytes::from_static(b"fine"));

    let stats = adapter.stats();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((count(&stats.timeouts), count(&stats.traps), count(&stats.out_of_memory)), (1, 1, 1));
}

#[test]
fn one_refused_item_fails_alone() {
    let adapter = runtime()
        .load("hostile", &file(env!("MEDIATION_MISBEHAVE_ADAPTER")), Role::Endpoint, &BTreeMap::new())
        .expect("loads");
    let inputs = vec![event("a"), event("refuse"), event("c")];
    let ids: Vec<String> = inputs.iter().map(|e| e.id.to_string()).collect();
    let mapped = adapter.map(Direction::Upstream, &route_context(0), inputs).expect("the call succeeds");
    let out: Vec<_> = mapped.outputs.iter().map(|e| (e.id.to_string(), e.payload.clone())).collect();
    assert_eq!(out, vec![(ids[0].clone(), Bytes::from_static(b"a")), (ids[2].clone(), Bytes::from_static(b"c"))]);
    assert_eq!(mapped.refused.len(), 1);
    assert_eq!(mapped.refused[0].0.id.to_string(), ids[1]);
    assert_eq!(mapped.refused[0].1.message, "refused on request");
}
