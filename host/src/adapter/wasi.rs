//! The sandbox's WASI: the few `wasi:*@0.2` imports that a Rust guest built for
//! `wasm32-wasip2` links against, implemented synchronously by the host.
//!
//! A guest gets no files, no environment, no arguments, no network and no stdin.
//! Whatever it writes to stdout or stderr (a panic message, say) is captured, up to
//! a few KiB, so that a trap can be explained. A guest that imports anything else
//! (sockets, the filesystem) does not fit and is refused at startup, naming the
//! missing import.
//!
//! The host implements these itself instead of using `wasmtime-wasi`: its
//! synchronous bindings block on a Tokio runtime to write a stream, which panics when
//! called from inside the async tasks that run adapters. These imports never block.

use std::hash::{BuildHasher, Hasher};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{ComponentType, Linker, Lower, Resource, ResourceType};

/// Bytes of guest output kept for error messages.
pub const OUTPUT_CAPTURE_BYTES: usize = 4096;

/// The WASI version whose interfaces are provided. Guests built against any
/// earlier `0.2.x` link too: the linker matches semver-compatible versions.
const VERSION: &str = "0.2.6";

/// What the sandbox keeps per store.
#[derive(Debug)]
pub struct Sandbox {
    /// The start of the guest's output (stdout and stderr together).
    output: Vec<u8>,
    /// Where the monotonic clock starts.
    epoch: Instant,
    /// Seeds the guest's random numbers.
    random: std::collections::hash_map::RandomState,
    /// Draws so far, so that each draw differs.
    draws: u64,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            output: Vec::new(),
            epoch: Instant::now(),
            random: std::collections::hash_map::RandomState::new(),
            draws: 0,
        }
    }
}

impl Sandbox {
    /// What the guest wrote since the last [`Sandbox::take_output`].
    pub fn take_output(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.output).trim().to_string();
        self.output.clear();
        text
    }

    fn write(&mut self, bytes: &[u8]) {
        let room = OUTPUT_CAPTURE_BYTES.saturating_sub(self.output.len());
        self.output.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn next_random(&mut self) -> u64 {
        self.draws += 1;
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.draws);
        hasher.finish()
    }
}

/// Gives a store's data access to its sandbox.
pub trait HasSandbox: Send + 'static {
    /// The sandbox state.
    fn sandbox(&mut self) -> &mut Sandbox;
}

/// Marker types of the resources the guest holds handles to. They carry no state:
/// every stream writes to the capture and every pollable is always ready.
struct OutputStream;
struct InputStream;
struct Pollable;
struct IoError;
struct TerminalInput;
struct TerminalOutput;

/// `wasi:io/streams.stream-error`; the sandbox's streams never fail, but the type is
/// part of every stream function's signature.
#[derive(ComponentType, Lower)]
#[component(variant)]
enum StreamError {
    #[component(name = "last-operation-failed")]
    #[allow(dead_code)] // Never constructed: sandbox streams do not fail.
    LastOperationFailed(Resource<IoError>),
    #[component(name = "closed")]
    #[allow(dead_code)] // Never constructed: sandbox streams do not close.
    Closed,
}

/// `wasi:clocks/wall-clock.datetime`.
#[derive(ComponentType, Lower)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

/// Adds the sandbox's WASI to `linker`.
///
/// # Errors
/// When a definition clashes, which is a host bug.
pub fn add_to_linker<T: HasSandbox>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let no_drop = |_: wasmtime::StoreContextMut<'_, T>, _: u32| Ok(());

    let mut poll = linker.instance(&format!("wasi:io/poll@{VERSION}"))?;
    poll.resource("pollable", ResourceType::host::<Pollable>(), no_drop)?;
    poll.func_wrap("[method]pollable.block", |_, (_,): (Resource<Pollable>,)| Ok(()))?;
    poll.func_wrap("[method]pollable.ready", |_, (_,): (Resource<Pollable>,)| Ok((true,)))?;

    let mut error = linker.instance(&format!("wasi:io/error@{VERSION}"))?;
    error.resource("error", ResourceType::host::<IoError>(), no_drop)?;
    error.func_wrap("[method]error.to-debug-string", |_, (_,): (Resource<IoError>,)| {
        Ok((String::from("sandbox stream error"),))
    })?;

    let mut streams = linker.instance(&format!("wasi:io/streams@{VERSION}"))?;
    streams.resource("input-stream", ResourceType::host::<InputStream>(), no_drop)?;
    streams.resource("output-stream", ResourceType::host::<OutputStream>(), no_drop)?;
    streams.func_wrap("[method]output-stream.check-write", |_, (_,): (Resource<OutputStream>,)| {
        Ok((Result::<u64, StreamError>::Ok(OUTPUT_CAPTURE_BYTES as u64),))
    })?;
    streams.func_wrap(
        "[method]output-stream.write",
        |mut store: wasmtime::StoreContextMut<'_, T>, (_, bytes): (Resource<OutputStream>, Vec<u8>)| {
            store.data_mut().sandbox().write(&bytes);
            Ok((Result::<(), StreamError>::Ok(()),))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: wasmtime::StoreContextMut<'_, T>, (_, bytes): (Resource<OutputStream>, Vec<u8>)| {
            store.data_mut().sandbox().write(&bytes);
            Ok((Result::<(), StreamError>::Ok(()),))
        },
    )?;
    for flush in ["[method]output-stream.flush", "[method]output-stream.blocking-flush"] {
        streams.func_wrap(flush, |_, (_,): (Resource<OutputStream>,)| Ok((Result::<(), StreamError>::Ok(()),)))?;
    }
    streams.func_wrap("[method]output-stream.subscribe", |_, (_,): (Resource<OutputStream>,)| {
        Ok((Resource::<Pollable>::new_own(0),))
    })?;

    let mut environment = linker.instance(&format!("wasi:cli/environment@{VERSION}"))?;
    environment.func_wrap("get-environment", |_, (): ()| Ok((Vec::<(String, String)>::new(),)))?;
    environment.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
    environment.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;

    let mut exit = linker.instance(&format!("wasi:cli/exit@{VERSION}"))?;
    exit.func_wrap("exit", |_, (_,): (Result<(), ()>,)| -> wasmtime::Result<()> {
        Err(wasmtime::Error::msg("the adapter called exit, which adapters may not do"))
    })?;

    let mut stdin = linker.instance(&format!("wasi:cli/stdin@{VERSION}"))?;
    stdin.func_wrap("get-stdin", |_, (): ()| Ok((Resource::<InputStream>::new_own(0),)))?;
    for (interface, function) in [("stdout", "get-stdout"), ("stderr", "get-stderr")] {
        let mut out = linker.instance(&format!("wasi:cli/{interface}@{VERSION}"))?;
        out.func_wrap(function, |_, (): ()| Ok((Resource::<OutputStream>::new_own(0),)))?;
    }

    let mut terminal_input = linker.instance(&format!("wasi:cli/terminal-input@{VERSION}"))?;
    terminal_input.resource("terminal-input", ResourceType::host::<TerminalInput>(), no_drop)?;
    let mut terminal_output = linker.instance(&format!("wasi:cli/terminal-output@{VERSION}"))?;
    terminal_output.resource("terminal-output", ResourceType::host::<TerminalOutput>(), no_drop)?;
    // No stream is a terminal.
    let mut stdin_terminal = linker.instance(&format!("wasi:cli/terminal-stdin@{VERSION}"))?;
    stdin_terminal.func_wrap("get-terminal-stdin", |_, (): ()| Ok((None::<Resource<TerminalInput>>,)))?;
    for (interface, function) in
        [("terminal-stdout", "get-terminal-stdout"), ("terminal-stderr", "get-terminal-stderr")]
    {
        let mut terminal = linker.instance(&format!("wasi:cli/{interface}@{VERSION}"))?;
        terminal.func_wrap(function, |_, (): ()| Ok((None::<Resource<TerminalOutput>>,)))?;
    }

    let mut monotonic = linker.instance(&format!("wasi:clocks/monotonic-clock@{VERSION}"))?;
    monotonic.func_wrap("now", |mut store: wasmtime::StoreContextMut<'_, T>, (): ()| {
        let elapsed = store.data_mut().sandbox().epoch.elapsed();
        Ok((u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),))
    })?;
    monotonic.func_wrap("resolution", |_, (): ()| Ok((1u64,)))?;
    let mut wall = linker.instance(&format!("wasi:clocks/wall-clock@{VERSION}"))?;
    wall.func_wrap("now", |_, (): ()| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok((Datetime { seconds: now.as_secs(), nanoseconds: now.subsec_nanos() },))
    })?;
    wall.func_wrap("resolution", |_, (): ()| Ok((Datetime { seconds: 0, nanoseconds: 1 },)))?;

    let mut random = linker.instance(&format!("wasi:random/random@{VERSION}"))?;
    random.func_wrap("get-random-u64", |mut store: wasmtime::StoreContextMut<'_, T>, (): ()| {
        Ok((store.data_mut().sandbox().next_random(),))
    })?;
    random.func_wrap("get-random-bytes", |mut store: wasmtime::StoreContextMut<'_, T>, (len,): (u64,)| {
        // A guest may ask for any length; cap it like any other guest input.
        let len = usize::try_from(len.min(1 << 16)).unwrap_or(0);
        let sandbox = store.data_mut().sandbox();
        let bytes: Vec<u8> = (0..len.div_ceil(8)).flat_map(|_| sandbox.next_random().to_le_bytes()).take(len).collect();
        Ok((bytes,))
    })?;
    let mut seed = linker.instance(&format!("wasi:random/insecure-seed@{VERSION}"))?;
    seed.func_wrap("insecure-seed", |mut store: wasmtime::StoreContextMut<'_, T>, (): ()| {
        let sandbox = store.data_mut().sandbox();
        Ok(((sandbox.next_random(), sandbox.next_random()),))
    })?;
    Ok(())
}
