//! The `mediation-host` binary as an operator runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mediation-host");

#[test]
fn check_accepts_the_quickstart_config() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(BIN).args(["check", "--config", "config.toml"]).current_dir(root).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "config.toml: ok (4 entrypoints, 1 endpoints, 5 routes)\n");
}

#[test]
fn check_lists_every_problem_with_its_path() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
        [bus]
        queue_capacity = 0
        [adapters]
        memory_limit_bytes = 2097152
        max_call_bytes = 4194304
        [entrypoints.ingest]
        type = "http_post"
        path = "ingest"
        [endpoints.ingest]
        type = "memory"
        [endpoints.queue]
        type = "memory"
        adapter_settings = { password = "${MEDIATION_TEST_UNSET_VARIABLE}" }
        [[routes]]
        source = "ingest"
        target = "queue"
        direction = "downstream"
        "#,
    )
    .expect("write");
    let out = Command::new(BIN).arg("check").arg("--config").arg(&path).output().expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "has 6 problem(s)",
        "bus.queue_capacity: must be at least 1",
        "adapters.max_call_bytes: must be from 1 to memory_limit_bytes (2097152)",
        "entrypoints.ingest.path: `ingest` must start with `/`",
        "endpoints.ingest: duplicate name: `ingest` is also an entrypoint",
        "endpoints.queue.adapter_settings.password: environment variable `MEDIATION_TEST_UNSET_VARIABLE` is not set",
        "routes[0].direction: `downstream` contradicts the kinds: `ingest` to `queue` is upstream",
    ] {
        assert!(stderr.contains(expected), "missing `{expected}` in:\n{stderr}");
    }
}

#[test]
fn check_loads_and_configures_every_adapter_as_run_does() {
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path.display().to_string()
    };
    let misbehave = std::fs::read(env!("MEDIATION_MISBEHAVE_ADAPTER")).expect("the test adapter");
    let text = write("notes.wasm", b"hello");
    let module = write("module.wasm", &wat::parse_str("(module)").expect("wat"));
    let empty = write("empty.wasm", &wat::parse_str("(component)").expect("wat"));
    let truncated = write("truncated.wasm", &misbehave[..misbehave.len() / 2]);
    let hostile = env!("MEDIATION_MISBEHAVE_ADAPTER");
    let path = dir.path().join("adapters.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            [entrypoints.text]
            type = "http_post"
            path = "/text"
            adapter = "{text}"
            [entrypoints.decodes-nothing]
            type = "http_post"
            path = "/post"
            adapter = "builtin:sse"
            [endpoints.module]
            type = "memory"
            adapter = "{module}"
            [endpoints.empty]
            type = "memory"
            adapter = "{empty}"
            [endpoints.truncated]
            type = "memory"
            adapter = "{truncated}"
            [endpoints.wrong-role]
            type = "memory"
            adapter = "builtin:sse"
            [endpoints.refused-settings]
            type = "memory"
            adapter = "{hostile}"
            adapter_settings = {{ volume = "11" }}
            "#
        ),
    )
    .expect("write");
    let out = Command::new(BIN).arg("check").arg("--config").arg(&path).output().expect("runs");
    assert!(!out.status.success(), "check refuses what run refuses");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "has 7 problem(s)",
        "entrypoints.text.adapter: adapter text (",
        "not a WebAssembly binary",
        "entrypoints.decodes-nothing.adapter: adapter decodes-nothing (builtin:sse): does not map what a http_post \
         entrypoint needs",
        "endpoints.module.adapter: adapter module (",
        "not a loadable component",
        "endpoints.empty.adapter: adapter empty (",
        "mediation:adapter/mapping",
        "endpoints.truncated.adapter: adapter truncated (",
        "endpoints.wrong-role.adapter: adapter wrong-role (builtin:sse): is an entrypoint adapter, but is used as an endpoint",
        "endpoints.refused-settings.adapter: adapter refused-settings (",
        "misbehave.wasm): refused its settings: unknown setting `volume`",
    ] {
        assert!(stderr.contains(expected), "missing `{expected}` in:\n{stderr}");
    }
}

/// Starts the binary on the quickstart config with free ports, checking the file for
/// changes every `reload_poll_ms` (0: only signals reload).
fn start(
    dir: &std::path::Path,
    reload_poll_ms: u64,
) -> (std::process::Child, std::io::Lines<BufReader<std::process::ChildStderr>>) {
    let path = dir.join("config.toml");
    let config = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml")).expect("quickstart");
    let config = config
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0")
        .replace("[host]\n", &format!("[host]\nreload_poll_ms = {reload_poll_ms}\n"));
    std::fs::write(&path, config).expect("write");
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("MEDIATION_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    // A watchdog: a test waiting for a log line that never comes fails instead of hanging.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    });
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let started = lines.by_ref().map_while(Result::ok).any(|l| l.contains("mediation host started"));
    assert!(started, "the host logs that it started");
    (child, lines)
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

/// SIGTERM stops the host in order and it exits 0.
#[test]
fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, lines) = start(dir.path(), 0);
    signal(&child, "TERM");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().expect("exits");
    assert!(exit.success(), "exit status {exit}; log: {rest:#?}");
    let position = |needle: &str| rest.iter().position(|l| l.contains(needle));
    let (stopping, stopped) = (position("shutting down"), position("mediation host stopped"));
    assert!(stopping.is_some() && stopped > stopping, "shutdown is logged in order: {rest:#?}");
}

/// SIGHUP reloads the routes; an invalid file is refused with its problems and the
/// running routes stay.
#[test]
fn sighup_reloads_routes_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, mut lines) = start(dir.path(), 0);
    let path = dir.path().join("config.toml");
    let good = std::fs::read_to_string(&path).expect("read");

    std::fs::write(&path, good.replace("target = \"chat\"", "target = \"nowhere\"")).expect("write");
    signal(&child, "HUP");
    let refused = lines.by_ref().map_while(Result::ok).find(|l| l.contains("reload refused")).expect("logged");
    assert!(refused.contains("routes[0].target: no entrypoint or endpoint is named `nowhere`"), "{refused}");

    std::fs::write(&path, &good).expect("write");
    signal(&child, "HUP");
    let reloaded = lines.by_ref().map_while(Result::ok).find(|l| l.contains("routes reloaded")).expect("logged");
    assert!(reloaded.contains("routes=5"), "{reloaded}");

    signal(&child, "TERM");
    assert!(child.wait().expect("exits").success());
}

/// A change to the file is noticed without a signal and its routes applied.
#[test]
fn a_changed_file_reloads_its_routes() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, mut lines) = start(dir.path(), 50);
    let path = dir.path().join("config.toml");
    let config = std::fs::read_to_string(&path).expect("read");
    let fewer = config.replace("[[routes]]\nsource = \"chat\"\ntarget = \"poll\"\n", "");
    assert_ne!(fewer, config, "the quickstart routes chat to poll");
    std::fs::write(&path, fewer).expect("write");
    let reloaded = lines.by_ref().map_while(Result::ok).find(|l| l.contains("routes reloaded")).expect("logged");
    assert!(reloaded.contains("file change") && reloaded.contains("routes=4"), "{reloaded}");
    signal(&child, "TERM");
    assert!(child.wait().expect("exits").success());
}
