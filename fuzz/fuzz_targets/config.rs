//! The configuration loader (`mediation_host::host::Config`): `Config::parse`, the function
//! `Config::load` runs on a file's text. The input is the file.
//!
//! Asserts that any text is either accepted or refused with at least one problem,
//! each with a message, and whose report can be printed; that parsing is deterministic
//! (the same text gives the same problems); and that an accepted configuration passes
//! its own `validate` again, with every route joining an entrypoint and an endpoint
//! that exist, and every component's adapter resolved to a builtin or an absolute path.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mediation_host::adapter::AdapterSource;
use mediation_host::component::Component;
use mediation_host::config::{ConfigError, Problems};
use mediation_host::host::Config;

/// Where the configuration file would be; relative adapter paths resolve against it.
const BASE: &str = "/etc/mediation-host";

/// `${NAME}` references resolve when the name starts with `SET_`, so that both a set
/// and a missing variable are one mutation away.
fn env(name: &str) -> Option<String> {
    name.starts_with("SET_").then(|| format!("value-of-{name}"))
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(BASE), &env)
}

fuzz_target!(|data: &[u8]| {
    // `Config::load` reads the file as UTF-8 text and refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Err(error) => {
            assert!(error.file.is_none());
            assert!(!error.problems.is_empty(), "refused without a problem");
            assert!(error.problems.iter().all(|problem| !problem.message.is_empty()), "{error}");
            assert!(error.to_string().starts_with(&format!("configuration has {} problem(s):", error.problems.len())));
            let _ = error.inline();
            assert_eq!(parse(text).expect_err("refused once, refused again"), error, "parsing is deterministic");
        }
        Ok(config) => {
            let mut problems = Problems::default();
            config.validate(&mut problems);
            assert!(problems.is_empty(), "an accepted config fails validate: {problems:?}");
            for route in &config.routes {
                let sides = (config.side(&route.source), config.side(&route.target));
                assert!(matches!(sides, (Some(a), Some(b)) if a != b), "{route:?}");
            }
            let adapters = config.entrypoints.values().map(|c| c as &dyn Component);
            for component in adapters.chain(config.endpoints.values().map(|c| c as &dyn Component)) {
                if let Some(AdapterSource::File(path)) = component.adapter() {
                    assert!(path.is_absolute(), "{path:?} is not resolved against {BASE}");
                }
            }
            let _ = format!("{config:?}");
        }
    }
});
