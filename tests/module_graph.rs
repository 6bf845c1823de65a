//! The shape of the crate, checked from its `use` lines: configuration flows one way (only
//! `config/`, the daemon and the programs in src/bin/ know `Config`; each role owns the types
//! of its settings), and the top-level modules form no circle, so each can be read, tested and
//! changed starting from the ones it uses.
//!
//! The graph is drawn from every `crate::<module>` path in the code of src/ (comments and
//! string literals left out), grouped imports (`use crate::{a, b::c}`) included. An edge
//! `a → b` means a file of module `a` names module `b`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules allowed to name `config`: it builds the roles' settings, the daemon wires the
/// roles with them, and the programs parse the command line.
const MAY_USE_CONFIG: &[&str] = &["config", "daemon"];

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src/").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of src/ belongs to (`src/registrar/pipeline.rs` → `registrar`,
/// `src/net.rs` → `net`); `None` for lib.rs and the programs in src/bin/.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The code of a Rust file without comments and without the contents of string and char
/// literals, so that a path named in a doc comment or a message is not an edge.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                // A raw string r"..." / r#"..."# never holds `crate::` paths we care about
                // in this crate; plain strings are skipped escape by escape.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') || (bytes.get(i + 1) == Some(&b'\\')) => {
                // 'x' or '\n' (a lifetime such as 'a has no closing quote two bytes on).
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules a piece of code names through `crate::`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(is_ident) {
            continue; // `sbc_crate::` or the like, not our crate
        }
        let rest_trimmed = rest.trim_start();
        if let Some(group) = rest_trimmed.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first segment of each top-level item.
            let mut depth = 0usize;
            let mut at_item_start = true;
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_item_start = true,
                    c if is_ident(c) && at_item_start => word.push(c),
                    _ if !word.is_empty() => {
                        names.insert(std::mem::take(&mut word));
                        at_item_start = false;
                    }
                    _ => {}
                }
            }
            if !word.is_empty() {
                names.insert(word);
            }
        } else {
            let name: String = rest_trimmed.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let Some(from) = top_module(&src, file) else { continue };
        let text = std::fs::read_to_string(file).expect("read a source file");
        for to in named_modules(&code_only(&text)) {
            if to != from && modules.contains(&to) {
                let relative = file.strip_prefix(&src).unwrap_or(file).to_path_buf();
                graph.entry(from.clone()).or_default().entry(to).or_default().insert(relative);
            }
        }
    }
    graph
}

/// The circles of `graph`: its strongly connected components of more than one module
/// (Tarjan's algorithm; the graph has a few dozen nodes).
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        let targets: Vec<&'g str> =
            s.graph.get(v).map(|edges| edges.keys().map(String::as_str).collect()).unwrap_or_default();
        for w in targets {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    let nodes: BTreeSet<&str> = graph
        .iter()
        .flat_map(|(from, edges)| std::iter::once(from.as_str()).chain(edges.keys().map(String::as_str)))
        .collect();
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn describe_edges(graph: &Graph, within: &[String]) -> String {
    let mut lines = Vec::new();
    for from in within {
        for (to, files) in graph.get(from).into_iter().flatten() {
            if within.contains(to) {
                let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                lines.push(format!("  {from} → {to} ({})", files.join(", ")));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn only_config_and_the_daemon_know_the_configuration() {
    let graph = graph();
    let offenders: Vec<String> = graph
        .iter()
        .filter(|(from, _)| !MAY_USE_CONFIG.contains(&from.as_str()))
        .filter_map(|(from, edges)| edges.get("config").map(|files| (from, files)))
        .map(|(from, files)| {
            let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            format!("  {from}: {}", files.join(", "))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "these modules use crate::config; a role owns the types of its settings and receives them, \
         config/ depends on the roles and not the other way round:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_top_level_modules_form_no_circle() {
    let graph = graph();
    let found = circles(&graph);
    let report: Vec<String> =
        found.iter().map(|c| format!("circle {{{}}}:\n{}", c.join(", "), describe_edges(&graph, c))).collect();
    assert!(found.is_empty(), "{}", report.join("\n"));
}

#[test]
fn the_graph_reader_sees_paths_grouped_imports_and_circles() {
    // The checks above are only as good as the reader: it must see what a real tree holds.
    let code = code_only(
        "use crate::{a::X, b::{c, d}, e};\n// crate::commented\nlet s = \"crate::quoted\";\nfn f() { crate::g::h(); }",
    );
    let names: Vec<String> = named_modules(&code).into_iter().collect();
    assert_eq!(names, ["a", "b", "e", "g"]);
    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(from.into()).or_default().entry(to.into()).or_default().insert(PathBuf::from("x.rs"));
    }
    assert_eq!(circles(&graph), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    // And it finds this crate's modules at all.
    let real = graph_of_this_crate_has("registrar", "store");
    assert!(real, "registrar uses store in src/, but the graph reader did not see it");
}

fn graph_of_this_crate_has(from: &str, to: &str) -> bool {
    graph().get(from).is_some_and(|edges| edges.contains_key(to))
}
