//! The crate's top-level modules form layers: no module reaches, directly or through
//! others, a module that reaches it back. A cycle is what makes every change ripple, so
//! `make lint` runs this test and a new one fails it, naming the imports that close it.
//!
//! The graph is read from the source: every `crate::<module>` path in a module's files
//! (`use` lines, grouped `use crate::{…}` included, and paths written inline), leaving
//! out comments and the `#[cfg(test)]` module at the end of a file, whose tests may
//! build what they test from the layer above.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where each import of one module by another is written: `file:line`.
type Edges = BTreeMap<(String, String), Vec<String>>;

#[test]
fn the_top_level_modules_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = imports(&src);
    let modules: BTreeSet<&String> = edges.keys().flat_map(|(from, to)| [from, to]).collect();
    assert!(modules.len() > 10, "the scan found the modules: {modules:?}");

    let cycles: Vec<Vec<String>> = components(&edges).into_iter().filter(|c| c.len() > 1).collect();
    let report: Vec<String> = cycles
        .iter()
        .map(|cycle| {
            let inside: Vec<String> = edges
                .iter()
                .filter(|((from, to), _)| cycle.contains(from) && cycle.contains(to))
                .map(|((from, to), at)| format!("  {from} -> {to} ({})", at.join(", ")))
                .collect();
            format!("{{{}}}:\n{}", cycle.join(", "), inside.join("\n"))
        })
        .collect();
    assert!(report.is_empty(), "modules that import each other:\n{}", report.join("\n"));
}

/// Every import of one top-level module by another under `src`.
fn imports(src: &Path) -> Edges {
    let mut edges = Edges::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).expect("under src");
        let from = top_level(relative);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let text = text.find("#[cfg(test)]\nmod ").map_or(text.as_str(), |end| &text[..end]);
        // Comments out, lines kept: a group that rustfmt wrapped over lines is read whole.
        let code: Vec<&str> = text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect();
        let code = code.join("\n");
        for (offset, to) in referenced(&code) {
            if to != from {
                let at = format!("{}:{}", relative.display(), code[..offset].matches('\n').count() + 1);
                edges.entry((from.clone(), to)).or_default().push(at);
            }
        }
    }
    edges
}

/// The top-level module a file under `src` belongs to: `endpoints/kafka/mod.rs` is in
/// `endpoints`, `bus.rs` is `bus`.
fn top_level(relative: &Path) -> String {
    let first = relative.components().next().expect("a path").as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The modules `crate::` paths in `code` name, each with where it is written:
/// `crate::bus::Bus` names `bus`, `crate::{bus, config::X}` names `bus` and `config`.
fn referenced(code: &str) -> Vec<(usize, String)> {
    let mut names = Vec::new();
    let mut searched = 0;
    while let Some(found) = code[searched..].find("crate::") {
        let at = searched + found + "crate::".len();
        match code[at..].strip_prefix('{') {
            Some(group) => names.extend(group_heads(group).into_iter().map(|(i, name)| (at + 1 + i, name))),
            None => names.push((at, identifier(&code[at..]))),
        }
        searched = at;
    }
    names.retain(|(_, n)| !n.is_empty() && n != "self");
    names
}

/// The first segment of each path in a `{a, b::c, d::{e, f}}` group, with its offset.
fn group_heads(group: &str) -> Vec<(usize, String)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expect_head = true,
            c if expect_head && depth == 0 && (c.is_alphabetic() || c == '_') => {
                heads.push((i, identifier(&group[i..])));
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

fn identifier(s: &str) -> String {
    s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// The strongly connected components of the import graph (Tarjan's algorithm): a
/// component of more than one module is a cycle.
fn components(edges: &Edges) -> Vec<Vec<String>> {
    struct Walk<'a> {
        next: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }

    impl<'a> Walk<'a> {
        fn visit(&mut self, module: &'a str) {
            let index = self.index.len();
            self.index.insert(module, index);
            self.low.insert(module, index);
            self.stack.push(module);
            for to in self.next.get(module).cloned().unwrap_or_default() {
                if !self.index.contains_key(to) {
                    self.visit(to);
                    let low = self.low[module].min(self.low[to]);
                    self.low.insert(module, low);
                } else if self.stack.contains(&to) {
                    let low = self.low[module].min(self.index[to]);
                    self.low.insert(module, low);
                }
            }
            if self.low[module] == self.index[module] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    component.push(top.to_owned());
                    if top == module {
                        break;
                    }
                }
                component.sort();
                self.found.push(component);
            }
        }
    }

    let mut walk = Walk {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for (from, to) in edges.keys() {
        walk.next.entry(from.as_str()).or_default().push(to.as_str());
        walk.next.entry(to.as_str()).or_default();
    }
    let modules: Vec<&str> = walk.next.keys().copied().collect();
    for module in modules {
        if !walk.index.contains_key(module) {
            walk.visit(module);
        }
    }
    walk.found
}

#[test]
fn the_scan_reads_plain_grouped_nested_and_wrapped_imports() {
    let names = |code: &str| referenced(code).into_iter().map(|(_, name)| name).collect::<Vec<_>>();
    assert_eq!(names("use crate::bus::Bus;"), ["bus"]);
    assert_eq!(names("use crate::{bus, config::{HostConfig, Problems}, routing::Side};"), ["bus", "config", "routing"]);
    assert_eq!(names("use crate::{\n    bus,\n    config::{\n        HostConfig,\n    },\n};"), ["bus", "config"]);
    assert_eq!(names("let x = crate::metrics::label(a, crate::event::Id);"), ["metrics", "event"]);
    assert_eq!(names("use crate::{self as me};"), Vec::<String>::new());
    assert_eq!(referenced("use crate::{\n    bus,\n};"), [(17, String::from("bus"))], "where each is written");
}

#[test]
fn a_cycle_is_found_and_a_chain_is_not() {
    let edges = |pairs: &[(&str, &str)]| -> Edges {
        pairs.iter().map(|(a, b)| ((a.to_string(), b.to_string()), vec![String::new()])).collect()
    };
    let cycles = |e: &Edges| components(e).into_iter().filter(|c| c.len() > 1).collect::<Vec<_>>();
    assert!(cycles(&edges(&[("host", "config"), ("config", "event"), ("host", "event")])).is_empty());
    assert_eq!(cycles(&edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])), [["a", "b", "c"]]);
}
