//! The crate graph inside each crate: no two top-level modules import each other (directly,
//! or through an item the crate root re-exports). A pair that does has no order in which it
//! can be read or changed alone; the fix is a leaf both use (as `agent::volume` is for warm
//! and archive).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 6] = ["agent", "cli", "coordinator", "objstore", "shared", "tests"];

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut found = Vec::new();
    for krate in CRATES {
        let src = workspace.join(krate).join("src");
        assert!(src.is_dir(), "{} is missing", src.display());
        let edges = imports(&src);
        for (a, targets) in &edges {
            for (b, files) in targets {
                if a < b
                    && let Some(back) = edges.get(b).and_then(|t| t.get(a))
                {
                    found.push(format!(
                        "{krate}: {a} → {b} ({}) and {b} → {a} ({})",
                        list(files),
                        list(back)
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "modules that import each other:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_sees_paths_groups_and_root_reexports() {
    let root = "pub use error::{AgentError, ErrorKind};\npub use docker::DockerError;\n";
    let reexports = root_reexports(root);
    let text = "use crate::{docker::stack, warm::{A, B}};\n\
                // use crate::commented;\n\
                fn f() -> crate::ErrorKind { crate::volume::plan() }";
    let got: BTreeSet<String> = referenced(text, &reexports).into_iter().collect();
    let want: BTreeSet<String> = ["docker", "warm", "error", "volume"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
}

/// For each top-level module of the crate at `src`, the modules it names, with the files
/// that name them.
fn imports(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let root = ["lib.rs", "main.rs"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(src.join(f)).ok())
        .collect::<String>();
    let reexports = root_reexports(&root);
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel.components().next().unwrap().as_os_str();
        let top = first.to_string_lossy().trim_end_matches(".rs").to_owned();
        if ["lib", "main", "bin"].contains(&top.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for module in referenced(&text, &reexports) {
            if module != top {
                edges
                    .entry(top.clone())
                    .or_default()
                    .entry(module)
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    edges
}

/// Item name → module, for the crate root's `pub use module::{Item, …}` lines.
fn root_reexports(root: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in root.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        let items = items.trim_end_matches(';').trim_matches(['{', '}']);
        for item in items.split(',') {
            let name = item.trim().rsplit("::").next().unwrap_or_default();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    map
}

/// The top-level modules `text` names through `crate::` paths (comments left out); an item
/// the root re-exports counts as its module.
fn referenced(text: &str, reexports: &BTreeMap<String, String>) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c}`: the first name of each item at depth one.
            let mut depth = 1;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && (c.is_alphanumeric() || c == '_') => {
                        names.push(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.push(ident(rest));
        }
    }
    names
        .into_iter()
        .filter(|n| !n.is_empty())
        .map(|n| reexports.get(&n).cloned().unwrap_or(n))
        .collect()
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn list(files: &BTreeSet<String>) -> String {
    files.iter().cloned().collect::<Vec<_>>().join(", ")
}
