//! The house rule that imports run one way: from the core, up through the
//! road, to the surfaces. `src/lib.rs` declares the modules in that order;
//! every `crate::` path in a module (outside comments) must name a module
//! declared before it. That order is then a topological one, so no two
//! modules can import each other in a circle.

use std::collections::BTreeMap;
use std::path::Path;

/// The top-level modules in the order `src/lib.rs` declares them.
fn declared_order(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').trim().to_owned())
        .collect()
}

/// A line without its `//` comment (doc comments included). A `//` right
/// after a `:` is a URL in a string, not a comment.
fn code_of(line: &str) -> &str {
    let mut search = 0;
    while let Some(found) = line[search..].find("//") {
        let at = search + found;
        if !line[..at].ends_with(':') {
            return &line[..at];
        }
        search = at + 2;
    }
    line
}

/// The modules named by `crate::NAME` paths in `source`'s code.
fn imports(source: &str, modules: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines().map(code_of) {
        for (at, _) in line.match_indices("crate::") {
            // `$crate::` and `tower_auth_crate::` are not this crate's paths.
            let before = line[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let rest = &line[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) && !found.contains(&name) {
                found.push(name);
            }
        }
        // `use crate::{a::X, b::Y}` names several modules at once.
        if let Some(group) = line.split("crate::{").nth(1) {
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) && !found.contains(&name) {
                    found.push(name);
                }
            }
        }
    }
    found
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Module -> the modules it imports, from every file of `src/` but
/// `lib.rs` (`src/token/cache.rs` belongs to `token`).
fn import_graph(src: &Path, modules: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src/");
        let first = relative.components().next().expect("a file name");
        let module = Path::new(first.as_os_str())
            .file_stem()
            .expect("a stem")
            .to_string_lossy()
            .into_owned();
        if module == "lib" {
            continue;
        }
        assert!(
            modules.contains(&module),
            "src/{} is not a module declared in src/lib.rs",
            relative.display()
        );
        let source = std::fs::read_to_string(&file).expect("readable source");
        let entry = graph.entry(module.clone()).or_default();
        for imported in imports(&source, modules) {
            if imported != module && !entry.contains(&imported) {
                entry.push(imported);
            }
        }
    }
    graph
}

/// A circle in `graph`, if there is one, as the path that closes it.
fn find_circle(graph: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut circle = path[start..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.iter().any(|n| n == node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.push(node.to_owned());
        None
    }
    let mut done = Vec::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn imports_run_one_way_and_never_in_a_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("src/lib.rs");
    let order = declared_order(&lib);
    assert!(order.len() > 10, "src/lib.rs declares modules: {order:?}");
    let graph = import_graph(&root.join("src"), &order);

    if let Some(circle) = find_circle(&graph) {
        panic!(
            "modules import each other in a circle: {}",
            circle.join(" -> ")
        );
    }
    let position = |module: &str| order.iter().position(|m| m == module);
    let mut upward = Vec::new();
    for (module, imported) in &graph {
        for target in imported {
            if position(target) > position(module) {
                upward.push(format!("{module} imports {target}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run upward (src/lib.rs declares the target after the importer): {upward:?}"
    );
}

#[test]
fn the_checker_sees_circles_and_upward_imports() {
    let modules: Vec<String> = ["error", "limit", "layer"].map(str::to_owned).to_vec();
    let error = "use crate::limit::LimitExceeded; // crate::layer in a comment";
    let limit = "use crate::{error::AuthError, layer::X};\nfn f() { crate::layer::g(); }";
    assert_eq!(imports(error, &modules), ["limit"]);
    assert_eq!(imports(limit, &modules), ["error", "layer"]);
    let url_then_code = "let url = \"https://example.com\"; crate::error::f();";
    assert_eq!(imports(url_then_code, &modules), ["error"]);

    let graph: BTreeMap<String, Vec<String>> = [
        ("error".to_owned(), vec!["limit".to_owned()]),
        ("limit".to_owned(), vec!["error".to_owned()]),
    ]
    .into();
    assert_eq!(
        find_circle(&graph),
        Some(["error", "limit", "error"].map(str::to_owned).to_vec())
    );
    let acyclic: BTreeMap<String, Vec<String>> =
        [("layer".to_owned(), vec!["error".to_owned()])].into();
    assert_eq!(find_circle(&acyclic), None);
}
