//! The layer order of `agent/src`, enforced: ARCHITECTURE.md ("Layers") writes it down and
//! this test reads every production file's `crate::`/`super::` paths and fails on an edge
//! that goes up or sideways between top-level modules, on a cycle between the files of one
//! module, and on a top-level module that has no layer yet. Text, not a compiler pass: it
//! sees paths as written (a re-export hides the file behind it), which is enough to keep
//! the direction honest and costs nothing to run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of lower layers only; modules of one layer do
/// not use each other.
const LAYERS: &[&[&str]] = &[
    &[
        "secret",
        "paths",
        "lockfile",
        "cleartext",
        "timefmt",
        "atomic_file",
    ],
    &["config"],
    &["logging", "store", "attest"],
    &["audit", "policy"],
    &["broker"],
    &["aws", "catalog"],
    &["protocol"],
    &["api", "client"],
    &["adapters"],
    &["daemon", "mcp"],
    &["cli"],
];

/// Files that exist only for tests (their edges do not count).
fn test_only(rel: &Path) -> bool {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || name == "test_fs.rs"
        || name == "fake_backstage.rs"
        || name == "layering.rs"
        || rel.starts_with("proptests")
        || rel.starts_with("bin")
        || name == "main.rs"
        || name == "lib.rs"
}

/// The module path of a file: `a/b.rs` -> `[a, b]`, `a/mod.rs` -> `[a]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if stem != "mod" {
            parts.push(stem);
        }
    }
    parts
}

/// The production text of a file: `#[cfg(test)]` modules (inline or declared) and comment
/// lines blanked (doc links name modules without depending on them), line numbers kept.
fn production_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    // Brace depth inside a test module being skipped.
    let mut skipping: Option<i64> = None;
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if let Some(depth) = skipping.as_mut() {
            *depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
            if *depth <= 0 {
                skipping = None;
            }
            out.push(String::new());
            continue;
        }
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod ") || n.contains(" mod "))
        {
            out.push(String::new());
            if let Some(m) = lines.next() {
                let depth = m.matches('{').count() as i64 - m.matches('}').count() as i64;
                if depth > 0 {
                    skipping = Some(depth);
                }
                out.push(String::new());
            }
            continue;
        }
        if t.starts_with("//") {
            out.push(String::new());
        } else {
            out.push(match line.find(" // ") {
                Some(i) => line[..i].to_string(),
                None => line.to_string(),
            });
        }
    }
    out
}

/// One path written in a file: where, and the module path it names (resolved against the
/// file's own module for `super::`).
#[derive(Debug)]
struct Use {
    line: usize,
    target: Vec<String>,
}

/// Every `crate::...` and `super::...` path in `lines`, including the members of
/// `crate::{a, b::c}` groups (which may span lines).
fn uses(lines: &[String], module: &[String]) -> Vec<Use> {
    let mut found = Vec::new();
    let text: String = lines.join("\n");
    let bytes = text.as_bytes();
    let line_of = |i: usize| text[..i].matches('\n').count() + 1;
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(off) = text[from..].find(start) {
            let at = from + off;
            from = at + start.len();
            // Only whole path starts (not `foo_crate::` or the tail of `super::super::`).
            if at > 0 {
                let prev = bytes[at - 1];
                if prev.is_ascii_alphanumeric() || prev == b'_' || prev == b':' {
                    continue;
                }
            }
            let (base, mut i) = if start == "crate::" {
                (Vec::new(), at + start.len())
            } else {
                // `super::super::...`: one level up per `super`.
                let mut base = module.to_vec();
                let mut i = at;
                while text[i..].starts_with("super::") {
                    base.pop();
                    i += "super::".len();
                }
                (base, i)
            };
            if text[i..].starts_with('{') {
                // A group: its top-level members.
                let mut depth = 0;
                let mut member = String::new();
                let mut members = Vec::new();
                while i < bytes.len() {
                    let c = bytes[i] as char;
                    match c {
                        '{' => {
                            depth += 1;
                            if depth > 1 {
                                member.push(c);
                            }
                        }
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                members.push(std::mem::take(&mut member));
                                break;
                            }
                            member.push(c);
                        }
                        ',' if depth == 1 => members.push(std::mem::take(&mut member)),
                        _ => member.push(c),
                    }
                    i += 1;
                }
                for m in members {
                    let segs = segments(m.trim());
                    if !segs.is_empty() && segs[0] != "self" {
                        let mut target = base.clone();
                        target.extend(segs);
                        found.push(Use {
                            line: line_of(at),
                            target,
                        });
                    }
                }
            } else {
                let mut target = base;
                target.extend(segments(&text[i..]));
                found.push(Use {
                    line: line_of(at),
                    target,
                });
            }
        }
    }
    found
}

/// The leading `a::b::c` identifiers of a path (up to a `{`, `*`, `(`, space...).
fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = path;
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        out.push(ident);
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// What the checks below look at: per production file, its module path and its uses.
fn graph() -> Vec<(PathBuf, Vec<String>, Vec<Use>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_path_buf();
            if test_only(&rel) {
                return None;
            }
            let module = module_path(&rel);
            let text = std::fs::read_to_string(&p).unwrap();
            let found = uses(&production_lines(&text), &module);
            Some((Path::new("agent/src").join(rel), module, found))
        })
        .collect()
}

/// Every edge between two top-level modules goes down the layer order.
fn layer_violations(graph: &[(PathBuf, Vec<String>, Vec<Use>)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (file, module, found) in graph {
        let from = &module[0];
        let Some(from_layer) = layer_of(from) else {
            bad.push(format!(
                "{}: module `{from}` has no layer; add it to LAYERS and ARCHITECTURE.md",
                file.display()
            ));
            continue;
        };
        for u in found {
            let Some(to) = u.target.first() else { continue };
            if to == from {
                continue;
            }
            match layer_of(to) {
                Some(to_layer) if to_layer < from_layer => {}
                Some(to_layer) => bad.push(format!(
                    "{}:{}: `{from}` (layer {from_layer}) uses `{to}` (layer {to_layer}): {}",
                    file.display(),
                    u.line,
                    if to_layer == from_layer {
                        "modules of one layer do not use each other"
                    } else {
                        "an edge that goes up"
                    }
                )),
                // Crate-root items and external paths are not modules of ours.
                None => {}
            }
        }
    }
    bad
}

/// File -> sibling file -> where the first use is written.
type Edges = BTreeMap<Vec<String>, BTreeMap<Vec<String>, (PathBuf, usize)>>;

/// Cycles between the files of one directory (a module's parts; its `mod.rs` is the
/// module's face and is left out).
fn file_cycles(graph: &[(PathBuf, Vec<String>, Vec<Use>)]) -> Vec<String> {
    let mut edges: Edges = BTreeMap::new();
    let files: BTreeSet<Vec<String>> = graph
        .iter()
        .filter(|(f, ..)| !f.ends_with("mod.rs"))
        .map(|(_, m, _)| m.clone())
        .collect();
    for (file, module, found) in graph {
        if !files.contains(module) {
            continue;
        }
        for u in found {
            // The sibling file the path names, if any.
            let parent = &module[..module.len() - 1];
            if u.target.len() > parent.len() && u.target[..parent.len()] == *parent {
                let sibling = u.target[..=parent.len()].to_vec();
                if sibling != *module && files.contains(&sibling) {
                    edges
                        .entry(module.clone())
                        .or_default()
                        .entry(sibling)
                        .or_insert((file.clone(), u.line));
                }
            }
        }
    }
    let mut bad = Vec::new();
    for (a, outs) in &edges {
        for (b, (file, line)) in outs {
            if a < b
                && let Some((back_file, back_line)) = edges.get(b).and_then(|o| o.get(a))
            {
                bad.push(format!(
                    "{}:{line} and {}:{back_line} use each other",
                    file.display(),
                    back_file.display()
                ));
            }
        }
    }
    // Longer cycles: a depth-first search from each file.
    fn reach(
        edges: &Edges,
        from: &Vec<String>,
        goal: &Vec<String>,
        seen: &mut BTreeSet<Vec<String>>,
    ) -> bool {
        for next in edges.get(from).into_iter().flat_map(|o| o.keys()) {
            if next == goal {
                return true;
            }
            if seen.insert(next.clone()) && reach(edges, next, goal, seen) {
                return true;
            }
        }
        false
    }
    for (a, outs) in &edges {
        for b in outs.keys() {
            let mut seen = BTreeSet::new();
            if !edges.get(b).is_some_and(|o| o.contains_key(a)) && reach(&edges, b, a, &mut seen) {
                bad.push(format!(
                    "{} -> {} is part of a longer cycle",
                    a.join("::"),
                    b.join("::")
                ));
            }
        }
    }
    bad
}

#[test]
fn modules_use_only_lower_layers() {
    let bad = layer_violations(&graph());
    assert!(bad.is_empty(), "layer order broken:\n{}", bad.join("\n"));
}

#[test]
fn files_of_a_module_do_not_use_each_other_in_a_circle() {
    let bad = file_cycles(&graph());
    assert!(bad.is_empty(), "file cycles:\n{}", bad.join("\n"));
}

#[test]
fn the_reader_sees_groups_super_chains_and_skips_comments_and_tests() {
    let text = "use crate::{config::{A, B}, secret::Secret};\n\
                // crate::cli is only named here\n\
                fn f() { super::super::store::open(); crate::paths::x(); }\n\
                #[cfg(test)]\nmod tests {\n use crate::cli;\n}\n\
                #[cfg(test)]\nmod fake;\nuse crate::policy::P;\n";
    let module = vec!["broker".to_string(), "slot".to_string()];
    let found = uses(&production_lines(text), &module);
    // `crate::` paths first, then `super::` ones, each in file order.
    let targets: Vec<(usize, String)> = found
        .iter()
        .map(|u| (u.line, u.target[0].clone()))
        .collect();
    assert_eq!(
        targets,
        vec![
            (1, "config".to_string()),
            (1, "secret".to_string()),
            (3, "paths".to_string()),
            (10, "policy".to_string()),
            (3, "store".to_string()),
        ]
    );
    // An upward edge and a sideways one are reported with file and line.
    let graph = vec![(
        PathBuf::from("agent/src/store/x.rs"),
        vec!["store".to_string(), "x".to_string()],
        uses(
            &production_lines("use crate::broker::Broker;\nuse crate::attest::A;\n"),
            &["store".to_string(), "x".to_string()],
        ),
    )];
    let bad = layer_violations(&graph);
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(
        bad[0].starts_with("agent/src/store/x.rs:1: `store`"),
        "{bad:?}"
    );
    assert!(bad[1].contains("do not use each other"), "{bad:?}");
    // Two sibling files that use each other are a cycle.
    let m = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
    let graph = vec![
        (
            PathBuf::from("agent/src/broker/a.rs"),
            m("broker", "a"),
            uses(&production_lines("use super::b::B;\n"), &m("broker", "a")),
        ),
        (
            PathBuf::from("agent/src/broker/b.rs"),
            m("broker", "b"),
            uses(
                &production_lines("\nuse crate::broker::a::A;\n"),
                &m("broker", "b"),
            ),
        ),
    ];
    assert_eq!(
        file_cycles(&graph),
        vec!["agent/src/broker/a.rs:1 and agent/src/broker/b.rs:2 use each other"]
    );
}
