//! The whole configuration file: TOML, parsed section by section so that one run of
//! [`Config::load`] reports every problem in the file, each with its TOML path.
//!
//! Loading has three steps: TOML syntax, `${ENV}` expansion in every string, then
//! typed parsing of each section and [`Config::validate`] for what types cannot say
//! (names that must exist, directions that must agree, ports that must not clash).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::adapter::AdapterSource;
use crate::component::Component;
use crate::config::{
    AdapterRuntimeConfig, BusConfig, ConfigError, HostConfig, MIN_HEADER_BYTES, PacketLogConfig, Problem, Problems,
    env, name_rule, valid_name,
};
use crate::endpoints::{Endpoint, EndpointConfig};
use crate::entrypoints::EntrypointConfig;
use crate::routing::{Components, Direction, RouteConfig, Side};

/// The whole configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Listeners, identity and process-wide limits.
    pub host: HostConfig,
    /// The bounded, sharded event bus.
    pub bus: BusConfig,
    /// Limits every WebAssembly adapter runs under.
    pub adapters: AdapterRuntimeConfig,
    /// The per-packet JSON log on stdout.
    pub packet_log: PacketLogConfig,
    /// Client-facing components, by name.
    pub entrypoints: BTreeMap<String, EntrypointConfig>,
    /// Broker-facing components, by name.
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// What goes where.
    pub routes: Vec<RouteConfig>,
}

impl Config {
    /// Every component: entrypoints first, then endpoints, each by name.
    #[must_use]
    pub fn components(&self) -> Components {
        let mut components = Components::default();
        for name in self.entrypoints.keys() {
            components.add(name, Side::Entrypoint);
        }
        for name in self.endpoints.keys() {
            components.add(name, Side::Endpoint);
        }
        components
    }

    /// Reads, expands and checks the file at `path`.
    ///
    /// # Errors
    /// Every problem in the file, each with its TOML path.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            problems: vec![Problem { path: String::new(), message: format!("cannot read the file: {e}") }],
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base, &|name| std::env::var(name).ok()).map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })
    }

    /// Parses configuration text. Relative adapter paths resolve against `base`;
    /// `${NAME}` references resolve through `env`.
    ///
    /// # Errors
    /// Every problem in the text, each with its TOML path.
    pub fn parse(text: &str, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut problems = Problems::default();
        let mut table: toml::Table = match text.parse() {
            Ok(table) => table,
            Err(e) => {
                problems.add("", format!("not valid TOML: {}", e.to_string().trim_end()));
                return problems.into_result(Self::default(), None);
            }
        };
        env::expand_table(&mut table, "", env, &mut problems);

        let mut config = Self::default();
        for (key, value) in table {
            match key.as_str() {
                "host" => section(value, &key, &mut problems, &mut config.host),
                "bus" => section(value, &key, &mut problems, &mut config.bus),
                "adapters" => section(value, &key, &mut problems, &mut config.adapters),
                "packet_log" => section(value, &key, &mut problems, &mut config.packet_log),
                "entrypoints" => config.entrypoints = named(value, &key, &mut problems),
                "endpoints" => config.endpoints = named(value, &key, &mut problems),
                "routes" => config.routes = listed(value, &key, &mut problems),
                _ => problems.add(
                    key,
                    "unknown section (expected host, bus, adapters, packet_log, entrypoints, endpoints, routes)",
                ),
            }
        }
        for adapter in config.adapters_mut() {
            adapter.resolve(base);
        }
        config.validate(&mut problems);
        problems.into_result(config, None)
    }

    fn adapters_mut(&mut self) -> impl Iterator<Item = &mut AdapterSource> {
        let entrypoints = self.entrypoints.values_mut().filter_map(EntrypointConfig::adapter_mut);
        entrypoints.chain(self.endpoints.values_mut().filter_map(EndpointConfig::adapter_mut))
    }

    /// Which side `name` is on, if it names a component.
    #[must_use]
    pub fn side(&self, name: &str) -> Option<Side> {
        if self.entrypoints.contains_key(name) {
            Some(Side::Entrypoint)
        } else if self.endpoints.contains_key(name) {
            Some(Side::Endpoint)
        } else {
            None
        }
    }

    /// Checks what the types alone cannot: names, references, directions, ports,
    /// ranges and adapter files.
    pub fn validate(&self, problems: &mut Problems) {
        self.validate_limits(problems);
        self.validate_components(problems);
        self.validate_ports(problems);
        crate::entrypoints::validate_paths(&self.entrypoints, problems);
        validate_routes(self, &self.routes, problems);
    }

    fn validate_limits(&self, problems: &mut Problems) {
        problems.check(self.host.max_message_bytes > 0, "host.max_message_bytes", "must be at least 1");
        problems.check(self.host.header_read_timeout_ms > 0, "host.header_read_timeout_ms", "must be at least 1");
        problems.check(
            self.host.max_header_bytes >= MIN_HEADER_BYTES,
            "host.max_header_bytes",
            format!("must be at least {MIN_HEADER_BYTES}"),
        );
        problems.check(self.host.body_read_timeout_ms > 0, "host.body_read_timeout_ms", "must be at least 1");
        problems.check(
            self.host.body_memory_bytes >= self.host.max_message_bytes,
            "host.body_memory_bytes",
            format!(
                "must be at least max_message_bytes ({}), or no body of the largest size fits",
                self.host.max_message_bytes
            ),
        );
        problems.check(self.host.send_timeout_ms > 0, "host.send_timeout_ms", "must be at least 1");
        problems.check(self.bus.queue_capacity > 0, "bus.queue_capacity", "must be at least 1");
        problems.check(self.bus.publish_timeout_ms > 0, "bus.publish_timeout_ms", "must be at least 1");
        problems.check(self.adapters.call_timeout_ms > 0, "adapters.call_timeout_ms", "must be at least 1");
        problems.check(
            self.adapters.memory_limit_bytes >= 1024 * 1024,
            "adapters.memory_limit_bytes",
            "must be at least 1048576 (1 MiB): a guest needs room for its stack and one batch",
        );
        problems.check(
            (1..=self.adapters.memory_limit_bytes).contains(&self.adapters.max_call_bytes),
            "adapters.max_call_bytes",
            format!(
                "must be from 1 to memory_limit_bytes ({}): the guest holds a call's input in that memory",
                self.adapters.memory_limit_bytes
            ),
        );
        problems.check(self.adapters.recycle_after_calls > 0, "adapters.recycle_after_calls", "must be at least 1");
        problems.check(self.adapters.failing_after > 0, "adapters.failing_after", "must be at least 1");
        problems.check(
            (0.0..=1.0).contains(&self.packet_log.sample_rate),
            "packet_log.sample_rate",
            format!("{} is outside 0.0 to 1.0", self.packet_log.sample_rate),
        );
        if let Some(id) = &self.host.instance_id {
            problems.check(valid_name(id), "host.instance_id", name_rule(id));
        }
    }

    fn validate_components(&self, problems: &mut Problems) {
        let entrypoints = self.entrypoints.iter().map(|(n, c)| (n, "entrypoints", c as &dyn Component));
        let endpoints = self.endpoints.iter().map(|(n, c)| (n, "endpoints", c as &dyn Component));
        for (name, table, component) in entrypoints.chain(endpoints) {
            let path = format!("{table}.{name}");
            problems.check(valid_name(name), &path, name_rule(name));
            if table == "endpoints" && self.entrypoints.contains_key(name) {
                problems.add(
                    &path,
                    format!("duplicate name: `{name}` is also an entrypoint; routes could not tell them apart"),
                );
            }
            if let Some(adapter) = component.adapter() {
                adapter.validate(&format!("{path}.adapter"), problems);
            }
            component.validate(&path, problems);
        }
    }

    fn validate_ports(&self, problems: &mut Problems) {
        let mut taken: Vec<(u16, String)> = Vec::new();
        let mut claim = |port: u16, path: String, problems: &mut Problems| {
            if port == 0 {
                return;
            }
            if let Some((_, other)) = taken.iter().find(|(p, _)| *p == port) {
                problems.add(&path, format!("port {port} is already used by {other}"));
            } else {
                taken.push((port, path));
            }
        };
        claim(self.host.listen.port(), String::from("host.listen"), problems);
        claim(self.host.admin_listen.port(), String::from("host.admin_listen"), problems);
        for (name, entrypoint) in &self.entrypoints {
            if let Some(port) = entrypoint.port() {
                claim(port, format!("entrypoints.{name}.port"), problems);
            }
        }
    }
}

fn validate_routes(config: &Config, routes: &[RouteConfig], problems: &mut Problems) {
    let mut seen = HashSet::new();
    for (i, route) in routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        let source = config.side(&route.source);
        let target = config.side(&route.target);
        problems.check(
            source.is_some(),
            format!("{path}.source"),
            format!("no entrypoint or endpoint is named `{}`", route.source),
        );
        problems.check(
            target.is_some(),
            format!("{path}.target"),
            format!("no entrypoint or endpoint is named `{}`", route.target),
        );
        if let (Some(source), Some(target)) = (source, target) {
            match (Direction::between(source, target), route.direction) {
                (None, _) => problems.add(
                    &path,
                    format!(
                        "`{}` and `{}` are both {}s; a route joins an entrypoint and an endpoint",
                        route.source,
                        route.target,
                        if source == Side::Entrypoint { "entrypoint" } else { "endpoint" }
                    ),
                ),
                (Some(actual), Some(given)) if actual != given => problems.add(
                    format!("{path}.direction"),
                    format!("`{given}` contradicts the kinds: `{}` to `{}` is {actual}", route.source, route.target),
                ),
                _ => {}
            }
        }
        if !seen.insert((&route.source, &route.target)) {
            problems.add(&path, format!("duplicate route from `{}` to `{}`", route.source, route.target));
        }
    }
}

/// Checks only the routes of `routes` against the components of `config`, as a
/// hot reload does: components need a restart, routes do not.
///
/// # Errors
/// Every problem in the routes.
pub fn validate_reload(config: &Config, routes: &[RouteConfig]) -> Result<(), ConfigError> {
    let mut problems = Problems::default();
    validate_routes(config, routes, &mut problems);
    problems.into_result((), None)
}

fn describe_error(e: &toml::de::Error) -> String {
    // The value-level error has no useful position of its own (the section was cut out
    // of the file), so only its message is kept; the caller adds the TOML path.
    e.message().trim_end().to_string()
}

fn section<T: DeserializeOwned>(value: toml::Value, path: &str, problems: &mut Problems, slot: &mut T) {
    match value.try_into() {
        Ok(parsed) => *slot = parsed,
        Err(e) => problems.add(path, describe_error(&e)),
    }
}

fn named<T: DeserializeOwned>(value: toml::Value, path: &str, problems: &mut Problems) -> BTreeMap<String, T> {
    let toml::Value::Table(table) = value else {
        problems.add(path, format!("must be a table of named {path}, like [{path}.my-name]"));
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (name, value) in table {
        match value.try_into() {
            Ok(parsed) => {
                out.insert(name, parsed);
            }
            Err(e) => problems.add(format!("{path}.{name}"), describe_error(&e)),
        }
    }
    out
}

fn listed<T: DeserializeOwned>(value: toml::Value, path: &str, problems: &mut Problems) -> Vec<T> {
    let toml::Value::Array(items) = value else {
        problems.add(path, format!("must be an array of tables, like [[{path}]]"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, value) in items.into_iter().enumerate() {
        match value.try_into() {
            Ok(parsed) => out.push(parsed),
            Err(e) => problems.add(format!("{path}[{i}]"), describe_error(&e)),
        }
    }
    out
}

/// The problems the host finds in endpoint `name` of type `type_name` with `fields`,
/// each as `path: message`: for the endpoint types' own tests.
#[cfg(test)]
pub(crate) fn endpoint_problems(name: &str, type_name: &str, fields: &str) -> Vec<String> {
    let text = format!("[endpoints.{name}]\ntype = \"{type_name}\"\n{fields}");
    match Config::parse(&text, Path::new("/nonexistent"), &|_| None) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/nonexistent"), &|name| (name == "TOPIC").then(|| String::from("orders")))
    }

    fn problems(text: &str) -> Vec<String> {
        parse(text).expect_err("config should be refused").problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_are_loopback_and_one_mebibyte() {
        let config = parse("").expect("empty config is valid");
        assert_eq!(config.host.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.host.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(config.host.max_message_bytes, 1024 * 1024);
        assert!(config.packet_log.enabled);
        assert!(!config.packet_log.include_payload);
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let found = problems(
            r#"
            [host]
            listen = "127.0.0.1:9090"
            [bus]
            queue_capacity = 0
            publish_timeout = 5
            [endpoints.orders]
            type = "memory"
            queue_capacity = 0
            [endpoints.typo]
            type = "kafak"
            [[routes]]
            source = "missing"
            target = "orders"
            [[routes]]
            source = "orders"
            target = "orders"
            [surprise]
            x = 1
            "#,
        );
        let expected = [
            "bus: unknown field `publish_timeout`",
            "endpoints.typo: unknown variant `kafak`",
            "surprise: unknown section",
            "host.admin_listen: port 9090 is already used by host.listen",
            "endpoints.orders.queue_capacity: must be at least 1",
            "routes[0].source: no entrypoint or endpoint is named `missing`",
            "routes[1]: `orders` and `orders` are both endpoints",
        ];
        for want in expected {
            assert!(found.iter().any(|p| p.starts_with(want)), "missing `{want}` in {found:#?}");
        }
    }

    #[test]
    fn expands_environment_and_names_missing_variables() {
        let config = parse(
            r#"
            [endpoints.e]
            type = "memory"
            adapter_settings = { topic = "${TOPIC}", literal = "$${TOPIC}" }
            "#,
        )
        .expect("valid");
        let EndpointConfig::Memory(memory) = &config.endpoints["e"] else { panic!("a memory endpoint") };
        assert_eq!(memory.adapter_settings["topic"], "orders");
        assert_eq!(memory.adapter_settings["literal"], "${TOPIC}");

        let found = problems(
            r#"
            [endpoints.e]
            type = "memory"
            adapter_settings = { password = "${NOT_SET_ANYWHERE}" }
            "#,
        );
        assert_eq!(
            found,
            vec!["endpoints.e.adapter_settings.password: environment variable `NOT_SET_ANYWHERE` is not set"]
        );
    }

    #[test]
    fn refuses_missing_adapter_files_and_unknown_builtins() {
        let found = problems(
            r#"
            [endpoints.a]
            type = "memory"
            adapter = "adapters/missing.wasm"
            [endpoints.b]
            type = "memory"
            adapter = "builtin:nope"
            "#,
        );
        assert!(
            found[0].starts_with("endpoints.a.adapter: adapter file /nonexistent/adapters/missing.wasm does not exist"),
            "{found:?}"
        );
        assert!(found[1].starts_with("endpoints.b.adapter: no builtin adapter `nope`"), "{found:?}");
    }

    #[test]
    fn refuses_bad_names_and_malformed_toml() {
        assert_eq!(
            problems("[endpoints.\"bad name\"]\ntype = \"memory\"\n"),
            vec!["endpoints.bad name: `bad name` is not a valid name: use 1 to 128 letters, digits, `-`, `_` or `.`"]
        );
        let syntax = problems("[host\n");
        assert!(syntax[0].starts_with("not valid TOML"), "{syntax:?}");
    }
}
