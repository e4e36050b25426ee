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
    let mapped = adapter.map(Direction::Upstream, &route_context(0), vec![event("hello"), event("again")]);
    assert!(mapped.failed.is_none(), "{:?}", mapped.failed);
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
    let call = |payload: &'static str| {
        let mapped = adapter.map(Direction::Upstream, &route_context(0), vec![event(payload)]);
        (mapped.outputs, mapped.failed)
    };

    let (_, failed) = call("loop");
    let (inputs, e) = failed.expect("stopped");
    assert!(matches!(e, AdapterError::Timeout { timeout_ms: 200, .. }), "{e}");
    assert_eq!(inputs.len(), 1, "the input comes back to be failed or retried");

    let (_, e) = call("panic").1.expect("trapped");
    assert!(matches!(e, AdapterError::Trap { .. }) && e.to_string().contains("asked to panic"), "{e}");

    let (_, e) = call("oom").1.expect("capped");
    assert!(matches!(e, AdapterError::OutOfMemory { limit_bytes, .. } if limit_bytes == 16 << 20), "{e}");

    let (fine, failed) = call("fine");
    assert!(failed.is_none(), "served after all of that: {failed:?}");
    assert_eq!(fine[0].payload, Bytes::from_static(b"fine"));

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
    let mapped = adapter.map(Direction::Upstream, &route_context(0), inputs);
    assert!(mapped.failed.is_none(), "{:?}", mapped.failed);
    let out: Vec<_> = mapped.outputs.iter().map(|e| (e.id.to_string(), e.payload.clone())).collect();
    assert_eq!(out, vec![(ids[0].clone(), Bytes::from_static(b"a")), (ids[2].clone(), Bytes::from_static(b"c"))]);
    assert_eq!(mapped.refused.len(), 1);
    assert_eq!(mapped.refused[0].0.id.to_string(), ids[1]);
    assert_eq!(mapped.refused[0].1.message, "refused on request");
}

#[test]
fn a_burst_larger_than_one_call_is_mapped_in_several_calls_each_within_the_memory_cap() {
    let adapter = runtime()
        .load("loud", &file(env!("MEDIATION_EXAMPLE_ADAPTER")), Role::Endpoint, &BTreeMap::new())
        .expect("loads");
    // 24 MiB of events against a 16 MiB memory cap: as one call, the guest could not
    // even hold its input.
    let inputs: Vec<Event> =
        (0..48).map(|n| Event::new(ComponentId(0), Bytes::from(format!("{n:03}").repeat(512 * 1024 / 3)))).collect();
    let expected: Vec<Bytes> = inputs.iter().map(|e| Bytes::from(e.payload.to_ascii_uppercase())).collect();
    let mapped = adapter.map(Direction::Upstream, &route_context(0), inputs);
    assert!(mapped.failed.is_none(), "{:?}", mapped.failed.map(|(_, e)| e));
    let payloads: Vec<Bytes> = mapped.outputs.iter().map(|e| e.payload.clone()).collect();
    assert!(payloads == expected, "every event mapped, in order");
    // Two events of 512 KiB and their overhead exceed the 1 MiB default: one per call.
    let calls = adapter.stats().calls.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(calls, 48);
}

#[test]
fn a_call_that_fails_returns_its_inputs_and_the_rest_and_keeps_what_came_before() {
    let config = AdapterRuntimeConfig { max_call_bytes: 160, ..Default::default() };
    let runtime = AdapterRuntime::new(&config).expect("runtime");
    let adapter = runtime
        .load("hostile", &file(env!("MEDIATION_MISBEHAVE_ADAPTER")), Role::Endpoint, &BTreeMap::new())
        .expect("loads");
    // Each event takes 74 to 78 bytes of input (payload, header, item overhead): two per call.
    let inputs: Vec<Event> = ["a", "b", "c", "panic", "e", "f"].into_iter().map(event).collect();
    let mapped = adapter.map(Direction::Upstream, &route_context(0), inputs);
    let payloads: Vec<&[u8]> = mapped.outputs.iter().map(|e| &e.payload[..]).collect();
    assert_eq!(payloads, [b"a", b"b"], "the first call's events were mapped");
    let (unmapped, e) = mapped.failed.expect("the second call failed");
    assert!(matches!(e, AdapterError::Trap { .. }), "{e}");
    let unmapped: Vec<&[u8]> = unmapped.iter().map(|e| &e.payload[..]).collect();
    assert_eq!(unmapped, [&b"c"[..], b"panic", b"e", b"f"], "its events and the rest come back, in order");
    let calls = adapter.stats().calls.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(calls, 2, "nothing is mapped after a failed call");
}
