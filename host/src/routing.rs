//! Routes: which targets each source's events go to.
//!
//! The table is an immutable snapshot. A reload builds a whole new table and swaps
//! it in atomically, so a reader sees either the old routes or the new ones, never a
//! half-built table and never an empty window.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;

use crate::metrics::RouteStats;

/// Which side a named component is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A client-facing entrypoint.
    Entrypoint,
    /// A broker-facing endpoint.
    Endpoint,
}

/// `[[routes]]`: events from `source` go to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The entrypoint or endpoint events come from.
    pub source: String,
    /// The endpoint or entrypoint they go to.
    pub target: String,
    /// Optional; when given it must agree with the kinds: entrypoint to endpoint is
    /// upstream, endpoint to entrypoint is downstream.
    pub direction: Option<Direction>,
}

/// A component's index in [`Components`]; stable for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId(pub u32);

impl ComponentId {
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// The names and sides of every entrypoint and endpoint, fixed at startup. Events
/// carry a [`ComponentId`] instead of a name so that routing is an array lookup.
#[derive(Debug, Default)]
pub struct Components {
    /// Names, indexed by [`ComponentId`].
    names: Vec<Arc<str>>,
    /// Sides, indexed by [`ComponentId`].
    sides: Vec<Side>,
}

impl Components {
    /// Registers a component and returns its id.
    pub fn add(&mut self, name: &str, side: Side) -> ComponentId {
        self.names.push(Arc::from(name));
        self.sides.push(side);
        ComponentId(u32::try_from(self.names.len() - 1).unwrap_or(u32::MAX))
    }

    /// The id of `name`.
    #[must_use]
    pub fn id(&self, name: &str) -> Option<ComponentId> {
        self.names.iter().position(|n| &**n == name).and_then(|i| u32::try_from(i).ok()).map(ComponentId)
    }

    /// The name of `id`.
    #[must_use]
    pub fn name(&self, id: ComponentId) -> &str {
        self.names.get(id.index()).map_or("?", |n| n)
    }

    /// The side of `id`.
    #[must_use]
    pub fn side(&self, id: ComponentId) -> Option<Side> {
        self.sides.get(id.index()).copied()
    }

    /// How many components there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Which way a route carries events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client to broker: an entrypoint's events go to an endpoint.
    Upstream,
    /// Broker to client: an endpoint's events go to an entrypoint.
    Downstream,
}

impl Direction {
    /// The direction from a `source` side to a `target` side; `None` when both are on
    /// the same side, which no route may join.
    #[must_use]
    pub fn between(source: Side, target: Side) -> Option<Self> {
        match (source, target) {
            (Side::Entrypoint, Side::Endpoint) => Some(Self::Upstream),
            (Side::Endpoint, Side::Entrypoint) => Some(Self::Downstream),
            _ => None,
        }
    }

    /// The lower-case name used in config, logs and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Downstream => "downstream",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resolved route.
#[derive(Debug)]
pub struct Route {
    /// The route's position in the configuration, passed to endpoint adapters.
    pub index: u32,
    /// Where events come from.
    pub source: ComponentId,
    /// Where they go.
    pub target: ComponentId,
    /// Upstream or downstream.
    pub direction: Direction,
    /// `source->target`, for logs and metrics.
    pub label: Arc<str>,
    /// Counters that survive reloads of the same source and target.
    pub stats: Arc<RouteStats>,
}

/// An immutable routing snapshot: for each source, the routes leaving it.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Routes leaving each component, indexed by [`ComponentId`].
    by_source: Vec<Vec<Arc<Route>>>,
}

impl RouteTable {
    /// Resolves configured routes against `components`, reusing the statistics of
    /// routes that `previous` already had.
    ///
    /// # Errors
    /// The first route naming a component that does not exist; [`Config::validate`]
    /// reports these with their paths before a table is ever built.
    pub fn build(components: &Components, routes: &[RouteConfig], previous: Option<&Self>) -> Result<Self, String> {
        let mut by_source = vec![Vec::new(); components.len()];
        let known: HashMap<(ComponentId, ComponentId), Arc<RouteStats>> = previous
            .map(|p| p.routes().map(|r| ((r.source, r.target), Arc::clone(&r.stats))).collect())
            .unwrap_or_default();
        for (index, config) in routes.iter().enumerate() {
            let lookup = |name: &str| components.id(name).ok_or_else(|| format!("no component named `{name}`"));
            let (source, target) = (lookup(&config.source)?, lookup(&config.target)?);
            let sides = components.side(source).zip(components.side(target));
            let direction = sides
                .and_then(|(s, t)| Direction::between(s, t))
                .ok_or_else(|| format!("`{}` and `{}` are on the same side", config.source, config.target))?;
            let label: Arc<str> = Arc::from(format!("{}->{}", config.source, config.target));
            let stats = known.get(&(source, target)).cloned().unwrap_or_else(|| Arc::new(RouteStats::default()));
            let route =
                Route { index: u32::try_from(index).unwrap_or(u32::MAX), source, target, direction, label, stats };
            by_source[source.index()].push(Arc::new(route));
        }
        Ok(Self { by_source })
    }

    /// The routes leaving `source`, in configuration order.
    #[must_use]
    pub fn from_source(&self, source: ComponentId) -> &[Arc<Route>] {
        self.by_source.get(source.index()).map_or(&[], Vec::as_slice)
    }

    /// Every route.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.by_source.iter().flatten()
    }
}

/// The live routing table, swapped atomically on reload.
#[derive(Debug)]
pub struct Routes(ArcSwap<RouteTable>);

impl Routes {
    /// Live routes starting from `table`.
    #[must_use]
    pub fn new(table: RouteTable) -> Self {
        Self(ArcSwap::from_pointee(table))
    }

    /// The current snapshot. Cheap; hold it for a batch, not across a long wait.
    #[must_use]
    pub fn snapshot(&self) -> Arc<RouteTable> {
        self.0.load_full()
    }

    /// Replaces the table in one atomic step.
    pub fn replace(&self, table: RouteTable) {
        self.0.store(Arc::new(table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Outcome;

    fn components() -> Components {
        let mut c = Components::default();
        c.add("ws", Side::Entrypoint);
        c.add("sse", Side::Entrypoint);
        c.add("kafka", Side::Endpoint);
        c
    }

    fn route(source: &str, target: &str) -> RouteConfig {
        RouteConfig { source: source.into(), target: target.into(), direction: None }
    }

    #[test]
    fn fans_out_in_configuration_order_with_directions() {
        let c = components();
        let table = RouteTable::build(&c, &[route("kafka", "sse"), route("ws", "kafka"), route("kafka", "ws")], None)
            .expect("valid routes");
        let from_kafka: Vec<_> =
            table.from_source(ComponentId(2)).iter().map(|r| (r.label.to_string(), r.direction)).collect();
        assert_eq!(
            from_kafka,
            vec![
                (String::from("kafka->sse"), Direction::Downstream),
                (String::from("kafka->ws"), Direction::Downstream)
            ]
        );
        assert_eq!(table.from_source(ComponentId(0))[0].direction, Direction::Upstream);
        assert!(table.from_source(ComponentId(1)).is_empty());
        assert!(table.from_source(ComponentId(99)).is_empty());
    }

    #[test]
    fn keeps_statistics_across_a_rebuild() {
        let c = components();
        let first = RouteTable::build(&c, &[route("ws", "kafka")], None).expect("valid");
        first.from_source(ComponentId(0))[0].stats.record(Outcome::Delivered);
        let second = RouteTable::build(&c, &[route("kafka", "ws"), route("ws", "kafka")], Some(&first)).expect("valid");
        assert_eq!(second.from_source(ComponentId(0))[0].stats.count(Outcome::Delivered), 1);
        assert_eq!(second.from_source(ComponentId(2))[0].stats.count(Outcome::Delivered), 0);
    }

    #[test]
    fn swaps_atomically_under_concurrent_lookups() {
        // Readers look up routes while a writer keeps swapping between two tables that
        // each route `ws` to exactly one target and `kafka` to a different entrypoint.
        // A reader must always see exactly one route from `ws` (never a gap or a
        // mix), and must see both tables, which proves the swaps raced the reads.
        let c = Arc::new(components());
        let table = |second: bool| {
            let routes = if second {
                [route("kafka", "ws"), route("ws", "kafka")]
            } else {
                [route("ws", "kafka"), route("kafka", "sse")]
            };
            RouteTable::build(&c, &routes, None).expect("valid")
        };
        let routes = Arc::new(Routes::new(table(false)));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let routes = Arc::clone(&routes);
                std::thread::spawn(move || {
                    let mut saw = [false, false];
                    while saw != [true, true] {
                        let table = routes.snapshot();
                        assert_eq!(table.from_source(ComponentId(0)).len(), 1, "a gap or a mix");
                        let from_kafka = table.from_source(ComponentId(2));
                        assert_eq!(from_kafka.len(), 1);
                        saw[usize::from(from_kafka[0].target == ComponentId(0))] = true;
                    }
                })
            })
            .collect();
        let mut second = false;
        while readers.iter().any(|r| !r.is_finished()) {
            second = !second;
            routes.replace(table(second));
        }
        for reader in readers {
            reader.join().expect("every lookup saw exactly one whole table");
        }
    }
}
