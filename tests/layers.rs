//! The layer rules of ARCHITECTURE.md ("Layers"), enforced: a module may import only from layers
//! below its own, never from its own layer's other modules nor from above. Every `crate::…` path
//! in `src/` (code and tests, comments excluded) is checked, so a new upward import fails here
//! with the file, the line and the rule it breaks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first. Keep in step with ARCHITECTURE.md.
const LAYERS: &[&[&str]] = &[
    &["private_fs", "secret", "admin", "state_dir"],
    &["config", "state_file"],
    &["logging", "model"],
    &["convert"],
    &["buffer"],
    &["deadletter"],
    &["receivers", "sinks"],
    &["query"],
    &["app"],
    &["cli", "tools", "lambda"],
];

/// Inside `sinks`: each sink may use the shared toolkit, neither the other sink; the toolkit
/// uses neither.
const SINKS: &[(&str, &[&str])] = &[
    ("common", &[]),
    ("dynamiq", &["common"]),
    ("otlp", &["common"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// One `crate::a::b…` reference: the first two path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    line: usize,
    top: String,
    second: Option<String>,
}

/// The `crate::` references of `text`, skipping comment lines. Handles `use crate::{a, b::c}`
/// groups spread over several lines.
fn references(text: &str) -> Vec<Reference> {
    let mut out = Vec::new();
    let mut code = String::new();
    let mut line_starts = Vec::new();
    for line in text.lines() {
        line_starts.push(code.len());
        let trimmed = line.trim_start();
        if !trimmed.starts_with("//") {
            code.push_str(line);
        }
        code.push('\n');
    }
    let line_at = |offset: usize| line_starts.partition_point(|&s| s <= offset);
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        from = at + "crate::".len();
        let preceded_by_ident = code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if preceded_by_ident {
            continue; // e.g. `dynamiq_sidecar::crate::` cannot occur; `mycrate::` is not ours
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                let mut parts = item.split("::");
                let top = ident(parts.next().unwrap_or(""));
                if top.is_empty() || top == "self" {
                    continue;
                }
                let second = parts.next().map(ident).filter(|s| !s.is_empty());
                out.push(Reference {
                    line: line_at(at),
                    top,
                    second,
                });
            }
        } else {
            let top = ident(rest);
            if top.is_empty() {
                continue;
            }
            let second = rest[top.len()..]
                .strip_prefix("::")
                .map(ident)
                .filter(|s| !s.is_empty());
            out.push(Reference {
                line: line_at(at),
                top,
                second,
            });
        }
    }
    out
}

/// The module path of a file under `src/`: `["sinks", "otlp", "client"]` for
/// `sinks/otlp/client.rs`.
fn module_path(relative: &Path) -> Vec<String> {
    relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|c| c != "mod")
        .collect()
}

/// The rule violations of one file (`relative` to `src/`).
fn violations(relative: &Path, text: &str) -> Vec<String> {
    let path = module_path(relative);
    let Some(own) = path.first() else {
        return Vec::new();
    };
    let Some(own_layer) = layer_of(own) else {
        return vec![format!(
            "{}: module `{own}` is in no layer: add it to LAYERS and to ARCHITECTURE.md",
            relative.display()
        )];
    };
    let mut out = Vec::new();
    for r in references(text) {
        let at = format!("src/{}:{}", relative.display(), r.line);
        if r.top == *own {
            if own == "sinks" {
                let from = path.get(1).map(String::as_str).unwrap_or("");
                let to = r.second.as_deref().unwrap_or("");
                if let Some((_, allowed)) = SINKS.iter().find(|(s, _)| *s == from) {
                    let is_sink = SINKS.iter().any(|(s, _)| *s == to);
                    if is_sink && to != from && !allowed.contains(&to) {
                        out.push(format!("{at}: sinks::{from} must not import sinks::{to}"));
                    }
                }
            }
            continue;
        }
        match layer_of(&r.top) {
            None => out.push(format!("{at}: `crate::{}` is in no layer", r.top)),
            Some(layer) if layer >= own_layer => out.push(format!(
                "{at}: `{own}` (layer {own_layer}) imports `crate::{}` (layer {layer}); a module may import only from lower layers",
                r.top
            )),
            Some(_) => {}
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_from_its_own_layer_or_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut edges = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        if relative == Path::new("lib.rs") || relative == Path::new("main.rs") {
            continue; // the crate root and the binary sit above every layer
        }
        let text = std::fs::read_to_string(file).unwrap();
        for r in references(&text) {
            edges.insert((module_path(relative)[0].clone(), r.top));
        }
        problems.extend(violations(relative, &text));
    }
    assert!(
        problems.is_empty(),
        "layer rules broken:\n{}",
        problems.join("\n")
    );
    // The scan sees the pipeline's real imports (it is not vacuous).
    for (from, to) in [
        ("receivers", "buffer"),
        ("sinks", "buffer"),
        ("query", "receivers"),
        ("buffer", "config"),
        ("app", "sinks"),
    ] {
        assert!(
            edges.contains(&(from.to_string(), to.to_string())),
            "expected {from} -> {to} among {edges:?}"
        );
    }
}

#[test]
fn the_checker_reports_an_upward_import_a_sibling_sink_and_an_unknown_module() {
    let upward = "//! doc\nuse crate::query::QueryIndex;\n";
    let found = violations(Path::new("sinks/dynamiq/mod.rs"), upward);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("src/sinks/dynamiq/mod.rs:2"), "{found:?}");

    let grouped = "use crate::{\n    buffer::Buffer,\n    receivers::ingest,\n};\n";
    let found = violations(Path::new("buffer/writer.rs"), grouped);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("crate::receivers"), "{found:?}");

    let sibling = "use crate::sinks::dynamiq::client::UpstreamClient;\n";
    let found = violations(Path::new("sinks/otlp/client.rs"), sibling);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("sinks::otlp must not import sinks::dynamiq"));
    assert!(
        violations(
            Path::new("sinks/otlp/mod.rs"),
            "use crate::sinks::common::retry;"
        )
        .is_empty()
    );

    let same_layer = "fn f() { crate::sinks::common::http::install_crypto_provider(); }";
    assert_eq!(
        violations(Path::new("receivers/http.rs"), same_layer).len(),
        1
    );

    assert!(violations(Path::new("model/batch.rs"), "/// see crate::query::api\n").is_empty());
    assert_eq!(violations(Path::new("newthing.rs"), "").len(), 1);
}
