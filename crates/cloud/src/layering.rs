//! Reads the cloud's sources and checks the layering ARCHITECTURE.md states: no import cycle
//! between files, the core imports no web or template types, the surfaces never import each
//! other, only the router names every surface, and audit rows are built only in the core.
//!
//! The graph is built from the text: `use` trees and inline paths starting with `crate::`,
//! `super::`, `self::` or a child module's name. Test modules are left out, since a test may
//! reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One source file as a module path (`portal::reset`), with its production text.
struct SourceFile {
    module: String,
    text: String,
}

fn source_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn module_path(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_owned();
    }
    if parts
        .last()
        .is_some_and(|last| last == "mod" || last == "lib")
    {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".to_owned()
    } else {
        parts.join("::")
    }
}

fn collect(directory: &Path, root: &Path, files: &mut Vec<SourceFile>) {
    let mut entries: Vec<_> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, root, files);
        } else if path.extension().is_some_and(|extension| extension == "rs")
            && path.file_name().is_some_and(|name| name != "main.rs")
        {
            let relative = path.strip_prefix(root).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            files.push(SourceFile {
                module: module_path(relative),
                text: production_code(&text),
            });
        }
    }
}

/// The file without comments and without its `#[cfg(test)]` items.
fn production_code(text: &str) -> String {
    let mut kept = String::new();
    let mut skipping_depth: Option<i32> = None;
    let mut depth = 0i32;
    let mut pending_test_attribute = false;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let trimmed = code.trim();
        if skipping_depth.is_none() && trimmed.starts_with("#[cfg(test)]") {
            pending_test_attribute = true;
            continue;
        }
        if pending_test_attribute && skipping_depth.is_none() && !trimmed.is_empty() {
            pending_test_attribute = false;
            if trimmed.ends_with(';') {
                continue;
            }
            skipping_depth = Some(depth);
        }
        for character in code.chars() {
            match character {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
        }
        match skipping_depth {
            Some(start) if depth <= start && code.contains('}') => skipping_depth = None,
            Some(_) => {}
            None => {
                kept.push_str(code);
                kept.push('\n');
            }
        }
    }
    kept
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand_use_tree(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or_default().trim();
        return vec![path.trim_end_matches("::self").to_owned()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for character in inner.chars() {
        match character {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(character);
    }
    parts.push(current);
    parts
        .iter()
        .filter(|part| !part.trim().is_empty())
        .flat_map(|part| expand_use_tree(part))
        .map(|path| {
            if path == "self" {
                prefix.to_owned()
            } else if prefix.is_empty() {
                path
            } else {
                format!("{prefix}::{path}")
            }
        })
        .collect()
}

fn is_identifier_character(character: char) -> bool {
    character.is_alphanumeric() || character == '_'
}

/// Every path the text names: `use` trees expanded, and inline paths of two or more segments.
fn named_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("use ") {
        let preceded_by_identifier = rest[..start]
            .chars()
            .next_back()
            .is_some_and(is_identifier_character);
        let after = &rest[start + 4..];
        let end = after.find(';').unwrap_or(after.len());
        let tree = &after[..end];
        let is_use_tree = tree.chars().all(|character| {
            is_identifier_character(character)
                || character.is_whitespace()
                || ":{},*".contains(character)
        });
        if !preceded_by_identifier && is_use_tree {
            paths.extend(expand_use_tree(tree));
        }
        rest = &after[end.min(after.len())..];
    }
    let characters: Vec<char> = text.chars().collect();
    let mut index = 0;
    while index < characters.len() {
        let starts_path = is_identifier_character(characters[index])
            && (index == 0 || !is_identifier_character(characters[index - 1]))
            && (index == 0 || characters[index - 1] != ':');
        if !starts_path {
            index += 1;
            continue;
        }
        let mut end = index;
        while end < characters.len()
            && (is_identifier_character(characters[end])
                || (characters[end] == ':'
                    && characters.get(end + 1) == Some(&':')
                    && characters
                        .get(end + 2)
                        .is_some_and(|next| is_identifier_character(*next))))
        {
            end += if characters[end] == ':' { 2 } else { 1 };
        }
        let path: String = characters[index..end].iter().collect();
        if path.contains("::") {
            paths.push(path);
        }
        index = end.max(index + 1);
    }
    paths
}

/// The modules and, for each, the modules its production code imports.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = source_directory();
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|file| file.module.clone()).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let mut imports = BTreeSet::new();
        let own: Vec<&str> = if file.module == "crate" {
            Vec::new()
        } else {
            file.module.split("::").collect()
        };
        for path in named_paths(&file.text) {
            let segments: Vec<&str> = path.split("::").collect();
            let mut absolute: Vec<String> = Vec::new();
            let mut remaining = segments.as_slice();
            match remaining.first() {
                Some(&"crate") => remaining = &remaining[1..],
                Some(&"super") => {
                    // In `a/b.rs` (module a::b) `super` is `a`.
                    let mut base = own.clone();
                    while remaining.first() == Some(&"super") {
                        base.pop();
                        remaining = &remaining[1..];
                    }
                    absolute.extend(base.iter().map(|part| (*part).to_owned()));
                }
                Some(&"self") => {
                    absolute.extend(own.iter().map(|part| (*part).to_owned()));
                    remaining = &remaining[1..];
                }
                Some(first) => {
                    let child: Vec<String> = own
                        .iter()
                        .map(|part| (*part).to_owned())
                        .chain([(*first).to_owned()])
                        .collect();
                    if !modules.contains(&child.join("::")) {
                        continue;
                    }
                    absolute.extend(own.iter().map(|part| (*part).to_owned()));
                }
                None => continue,
            }
            absolute.extend(remaining.iter().map(|part| (*part).to_owned()));
            let target = (0..=absolute.len())
                .rev()
                .map(|length| {
                    if length == 0 {
                        "crate".to_owned()
                    } else {
                        absolute[..length].join("::")
                    }
                })
                .find(|candidate| modules.contains(candidate));
            if let Some(target) = target
                && target != file.module
            {
                imports.insert(target);
            }
        }
        graph.insert(file.module.clone(), imports);
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Search<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, module: &'a str) {
            let next = self.index.len();
            self.index.insert(module, next);
            self.low.insert(module, next);
            self.stack.push(module);
            self.on_stack.insert(module);
            for imported in self.graph.get(module).into_iter().flatten() {
                let imported = imported.as_str();
                if !self.index.contains_key(imported) {
                    self.visit(imported);
                    let low = self.low[module].min(self.low[imported]);
                    self.low.insert(module, low);
                } else if self.on_stack.contains(imported) {
                    let low = self.low[module].min(self.index[imported]);
                    self.low.insert(module, low);
                }
            }
            if self.low[module] == self.index[module] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    component.push(member.to_owned());
                    if member == module {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for module in graph.keys() {
        if !search.index.contains_key(module.as_str()) {
            search.visit(module);
        }
    }
    search.found
}

/// Prints the graph, for the closing note of a change that moves modules:
/// `cargo test -p writeback-cloud --lib layering::print -- --ignored --nocapture`.
#[test]
#[ignore]
fn print() {
    let graph = import_graph();
    for (module, imports) in &graph {
        println!(
            "{module} -> {}",
            imports.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    for cycle in cycles(&graph) {
        println!("cycle of {}: {}", cycle.len(), cycle.join(", "));
    }
    let without_root: BTreeMap<String, BTreeSet<String>> = graph
        .iter()
        .filter(|(module, _)| *module != "crate")
        .map(|(module, imports)| {
            let imports = imports
                .iter()
                .filter(|imported| *imported != "crate")
                .cloned()
                .collect();
            (module.clone(), imports)
        })
        .collect();
    for cycle in cycles(&without_root) {
        println!(
            "without the crate root, cycle of {}: {}",
            cycle.len(),
            cycle.join(", ")
        );
    }
}

#[test]
fn use_trees_expand_to_every_path() {
    assert_eq!(
        expand_use_tree("crate::{a, b::{c, d as e}, f::self}"),
        ["crate::a", "crate::b::c", "crate::b::d", "crate::f"]
    );
    assert_eq!(expand_use_tree("super::X"), ["super::X"]);
}

#[test]
fn test_modules_and_comments_are_left_out() {
    let text = "use crate::a;\n// crate::b\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\nfn after() { crate::d::f(); }\n";
    let kept = production_code(text);
    assert!(kept.contains("crate::a") && kept.contains("crate::d"));
    assert!(!kept.contains("crate::b") && !kept.contains("crate::c"));
}

const SURFACES: &[&str] = &["api", "console", "portal", "agent_socket"];

fn layer_of(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn no_file_imports_a_file_that_imports_it() {
    let cycles = cycles(&import_graph());
    assert!(cycles.is_empty(), "import cycles: {cycles:?}");
}

#[test]
fn the_service_layer_knows_no_web_outbound_surface_or_router() {
    let root = source_directory();
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    for file in files
        .iter()
        .filter(|file| layer_of(&file.module) == "service")
    {
        for web_type in ["axum", "askama", "hyper::", "http::"] {
            assert!(
                !file.text.contains(web_type),
                "{} names {web_type}",
                file.module
            );
        }
    }
    for (module, imports) in import_graph() {
        let importer = layer_of(&module).to_owned();
        for imported in imports {
            let imported = layer_of(&imported);
            if importer == "service" {
                assert!(
                    imported == "service" || imported == "config",
                    "{module} imports {imported}"
                );
            }
            if importer == "web" || importer == "outbound" {
                assert!(
                    !SURFACES.contains(&imported) && imported != "router",
                    "{module} imports {imported}"
                );
            }
            if SURFACES.contains(&importer.as_str()) {
                assert!(
                    imported == importer || !SURFACES.contains(&imported) && imported != "router",
                    "{module} imports {imported}"
                );
            }
            if module == "crate" {
                assert!(!SURFACES.contains(&imported), "lib.rs imports {imported}");
            }
        }
    }
}

#[test]
fn audit_rows_are_built_only_in_the_service_audit_module() {
    let root = source_directory();
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    for file in files
        .iter()
        .filter(|file| file.module != "service::audit" && file.module != "layering")
    {
        assert!(
            !file.text.contains("append_audit(")
                && !file.text.contains("AuditEvent {\n            at"),
            "{} writes an audit row itself",
            file.module
        );
    }
}
