//! Builds the default adapters from `guests/` for `wasm32-wasip2` and embeds them.
//!
//! The guests are ordinary workspace crates; this script runs a nested `cargo build`
//! for the wasm target into its own target directory (so it never waits on the outer
//! build's lock) and generates `builtins.rs`, which maps each builtin name to its
//! bytes. The example and test guests are built too and their paths exported to the
//! host's tests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The default adapters embedded in the binary, by builtin name (= guest folder).
const BUILTINS: [&str; 9] =
    ["websocket", "sse", "http-get", "http-post", "kafka", "rabbitmq", "mqtt5", "solace", "jms"];
/// Guests built for the tests and docs but not embedded, with the env var naming each file.
const EXTRAS: [(&str, &str); 3] = [
    ("example-shout", "MEDIATION_EXAMPLE_ADAPTER"),
    ("misbehave", "MEDIATION_MISBEHAVE_ADAPTER"),
    ("pace", "MEDIATION_PACE_ADAPTER"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("the host crate sits inside the workspace");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    for watched in ["guests", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    // A fuzz build (`cargo fuzz`, which passes `--cfg fuzzing`) embeds no adapter: the
    // fuzz targets exercise the host's parsing natively and never instantiate one, and
    // the nightly toolchain it runs on need not have the wasm32-wasip2 target.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        write_builtins(&out_dir.join("builtins.rs"), None);
        return;
    }

    // Under the outer build's target directory when one is set, so that a fresh clone
    // (whose OUT_DIR is new) reuses the guests' compiled dependencies.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| out_dir.join("wasm-target"), |dir| PathBuf::from(dir).join("wasm-guests"));
    let guests = BUILTINS.iter().copied().chain(EXTRAS.iter().map(|(name, _)| *name));
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for guest in guests.clone() {
        cargo.args(["-p", &format!("adapter-{guest}")]);
    }
    // The outer build's wrappers and flags (clippy's driver, host RUSTFLAGS) are for
    // the host target; the guests get a plain release build without debug info.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cargo.env_remove(var);
    }
    cargo.env("CARGO_PROFILE_RELEASE_DEBUG", "false").env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let status = cargo.status().expect("cannot run cargo to build the wasm adapters");
    assert!(
        status.success(),
        "building the wasm adapters failed; is the wasm32-wasip2 target installed? (`rustup target add wasm32-wasip2`, which `make` does)"
    );

    let built = target_dir.join("wasm32-wasip2").join("release");
    let adapters = out_dir.join("adapters");
    std::fs::create_dir_all(&adapters).expect("cannot create the adapters folder in OUT_DIR");
    for guest in guests {
        let from = built.join(format!("adapter_{}.wasm", guest.replace('-', "_")));
        let to = adapters.join(format!("{guest}.wasm"));
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
    }
    write_builtins(&out_dir.join("builtins.rs"), Some(&adapters));
    for (guest, var) in EXTRAS {
        println!("cargo:rustc-env={var}={}", adapters.join(format!("{guest}.wasm")).display());
    }
}

/// Writes `builtins.rs`; without `adapters` (a fuzz build) every name maps to no bytes.
fn write_builtins(file: &Path, adapters: Option<&Path>) {
    let mut code = String::from("/// Every builtin adapter name.\npub const BUILTIN_NAMES: [&str; ");
    let _ = write!(code, "{}] = {:?};\n\n", BUILTINS.len(), BUILTINS);
    code.push_str("/// The component bytes of builtin adapter `name`.\npub fn bytes(name: &str) -> Option<&'static [u8]> {\n    match name {\n");
    if let Some(adapters) = adapters {
        for name in BUILTINS {
            let path = adapters.join(format!("{name}.wasm"));
            let _ = writeln!(code, "        {name:?} => Some(include_bytes!({:?})),", path.display().to_string());
        }
    }
    code.push_str("        _ => None,\n    }\n}\n");
    std::fs::write(file, code).expect("cannot write builtins.rs");
}
