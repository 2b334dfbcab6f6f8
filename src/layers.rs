//! The layer order of `src/`, enforced: every `crate::` path in a top-level module must name a
//! module of a strictly lower layer, so there is no import upwards and no circle. The same
//! table is in docs/architecture.md ("Layers"), and the test checks that the two agree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top to bottom. A module may import only modules of the layers below its own.
pub(crate) const LAYERS: &[&[&str]] = &[
    &["cli", "fuzzing"],
    &["site"],
    &["error"],
    &["audit"],
    &["export"],
    &["batch", "station", "lifecycle"],
    &["auditlog"],
    &["manifest"],
    &["issue"],
    &["ledger"],
    &["ca"],
    &["csr"],
    &["profile"],
    &["config"],
    &["x509", "hsm"],
    &["crypto"],
    &["output", "secret", "yaml", "pkcs11_uri"],
    &["clock", "exit", "identity", "input", "process", "text"],
];

/// Files of the crate root that are not modules of a layer.
const ROOT_FILES: &[&str] = &["lib", "main", "layers"];

/// The top-level modules each top-level module names through `crate::` paths (comments and
/// string literals ignored), from the sources under `src`.
pub(crate) fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = top_module(src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let entry = graph.entry(from.clone()).or_default();
        for to in crate_paths(&code_only(&text)) {
            if to != from && modules.contains(&to) {
                entry.insert(to);
            }
        }
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/site/batch.rs` → `site`, `src/clock.rs` → `clock`; `None` for the crate root files.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!ROOT_FILES.contains(&name)).then(|| name.to_string())
}

/// The source without comments, string and character literals (a `crate::` in a doc comment
/// or a message is no import).
fn code_only(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            'r' if (!prev_ident(&c, i) || (c[i - 1] == 'b' && !prev_ident(&c, i - 1)))
                && (c.get(i + 1) == Some(&'"')
                    || (c.get(i + 1) == Some(&'#')
                        && c[i + 1..].iter().find(|ch| **ch != '#') == Some(&'"'))) =>
            {
                let hashes = c[i + 1..].iter().take_while(|ch| **ch == '#').count();
                i += 1 + hashes + 1;
                while i < c.len() {
                    if c[i] == '"'
                        && c[i + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|ch| **ch == '#')
                            .count()
                            == hashes
                    {
                        i += 1 + hashes;
                        break;
                    }
                    i += 1;
                }
                out.push_str("\"\"");
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' if c.get(i + 1) == Some(&'\\') => {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            '\'' if c.get(i + 2) == Some(&'\'') => {
                i += 3;
                out.push_str("' '");
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

fn prev_ident(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// The first segment after each `crate::`, including every item of a `crate::{a, b::c}` group.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == '$') {
            continue;
        }
        let tail = rest.trim_start();
        if let Some(group) = tail.strip_prefix('{') {
            group_items(group, &mut out);
        } else {
            out.push(ident(tail));
        }
    }
    out
}

/// The first identifier of each top-level item of a `{…}` group.
fn group_items(group: &str, out: &mut Vec<String>) {
    let mut depth = 0;
    let mut start = true;
    for (i, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => return,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                out.push(ident(&group[i..]));
                start = false;
            }
            _ => {}
        }
    }
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Every violation of `layers` in `graph`: modules missing from the table, imports of a
/// module that is not strictly lower, and circles.
pub(crate) fn violations(
    graph: &BTreeMap<String, BTreeSet<String>>,
    layers: &[&[&str]],
) -> Vec<String> {
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (*m, i)))
        .collect();
    let mut out = Vec::new();
    for (from, tos) in graph {
        let Some(&rf) = rank.get(from.as_str()) else {
            out.push(format!(
                "module {from} is not in the layer table (src/layers.rs and docs/architecture.md)"
            ));
            continue;
        };
        for to in tos {
            match rank.get(to.as_str()) {
                None => out.push(format!("module {to} is not in the layer table")),
                Some(&rt) if rt <= rf => out.push(format!(
                    "{from} (layer {}) imports {to} (layer {}): imports point down only; move the shared part below both",
                    rf + 1,
                    rt + 1
                )),
                Some(_) => {}
            }
        }
    }
    out.extend(cycles(graph));
    out.sort();
    out.dedup();
    out
}

/// Circles among top-level modules, one message per module that lies on one.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn visit<'g>(
        m: &'g str,
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'g str>,
        done: &mut BTreeSet<&'g str>,
        out: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| *p == m) {
            let mut circle: Vec<&str> = path[i..].to_vec();
            circle.push(m);
            out.push(format!("circle: {}", circle.join(" → ")));
            return;
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for to in graph.get(m).into_iter().flatten() {
            visit(to, graph, path, done, out);
        }
        path.pop();
    }
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, graph, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    #[test]
    fn item3_imports_point_down_the_layer_table_and_form_no_circle() {
        let graph = import_graph(&src());
        assert!(graph.len() > 20, "the source tree was not found: {graph:?}");
        let bad = violations(&graph, LAYERS);
        assert!(
            bad.is_empty(),
            "the import graph breaks the layer order:\n  {}",
            bad.join("\n  ")
        );
        // Every layer's module exists: a renamed module must be renamed in the table too.
        for m in LAYERS.iter().flat_map(|l| l.iter()) {
            assert!(
                graph.contains_key(*m),
                "{m} is in the layer table but not in src/"
            );
        }
    }

    #[test]
    fn item3_the_layer_table_in_docs_is_the_enforced_one() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"),
        )
        .unwrap_or_default();
        let rows: Vec<Vec<String>> = doc
            .lines()
            .skip_while(|l| !l.starts_with("## Layers"))
            .skip_while(|l| !l.starts_with("| 1 |"))
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let mut mods: Vec<String> = cells
                    .get(2)
                    .unwrap_or(&"")
                    .split(',')
                    .map(|m| m.trim().trim_matches('`').trim_end_matches('/').to_string())
                    .collect();
                mods.sort();
                mods
            })
            .collect();
        let want: Vec<Vec<String>> = LAYERS
            .iter()
            .map(|l| {
                let mut v: Vec<String> = l.iter().map(|m| m.to_string()).collect();
                v.sort();
                v
            })
            .collect();
        assert_eq!(
            rows, want,
            "docs/architecture.md \"Layers\" differs from src/layers.rs"
        );
    }

    #[test]
    fn item3_the_check_finds_upward_imports_circles_and_unlisted_modules() {
        let dir = std::env::temp_dir().join(format!("certfab-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("issue")).unwrap();
        let write = |p: &str, t: &str| std::fs::write(dir.join(p), t).unwrap();
        // issue names batch through a group, batch names issue; x509 names ca only in a
        // comment and a string (no import); stray is in no layer.
        write("lib.rs", "pub mod issue; pub mod batch;");
        write(
            "issue/mod.rs",
            "use crate::{clock, batch::{run, Job}};\nfn f() { let _ = r#\"crate::ca\"#; }",
        );
        write("batch.rs", "use crate::issue::prepare;\n");
        write(
            "x509.rs",
            "// crate::ca::CaCert\nconst S: &str = \"crate::ca\";\n",
        );
        write("clock.rs", "pub(crate) fn now() {}\n");
        write(
            "ca.rs",
            "use crate::x509::pem; fn g<'a>(x: &'a str) -> char { 'c' }\n",
        );
        write("stray.rs", "use crate::clock::now;\n");
        let graph = import_graph(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            graph["x509"],
            BTreeSet::new(),
            "comments and strings are no imports"
        );
        assert_eq!(
            graph["issue"],
            ["batch", "clock"].map(String::from).into(),
            "groups are followed"
        );
        let bad = violations(
            &graph,
            &[&["batch"], &["issue"], &["ca"], &["x509"], &["clock"]],
        );
        assert!(
            bad.iter()
                .any(|b| b.starts_with("issue (layer 2) imports batch (layer 1)")),
            "{bad:?}"
        );
        assert!(
            bad.iter()
                .any(|b| b.starts_with("circle: batch → issue → batch")),
            "{bad:?}"
        );
        assert!(
            bad.iter()
                .any(|b| b.contains("module stray is not in the layer table")),
            "{bad:?}"
        );
    }
}
