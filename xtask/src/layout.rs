//! `cargo xtask layout`: the tree's shape, checked. Every source file outside tests stays
//! under [`MAX_LINES`] lines, and no two top-level modules of one crate import each other
//! (directly or around a loop) but the [`ALLOWED_CYCLES`], each with its reason. Runs in CI.
//!
//! A module is a file `src/<m>.rs` or a folder `src/<m>/`; an import is `crate::<m>` in
//! code (comments and test modules excluded). Inline `mod tests` blocks do not count
//! towards a file's lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::util::{root, Result};

/// Longest source file allowed outside tests.
pub const MAX_LINES: usize = 800;

/// Cycles kept on purpose: (crate folder, modules, why).
pub const ALLOWED_CYCLES: &[(&str, &[&str], &str)] = &[
    (
        "sim",
        &["invariants", "world"],
        "the invariant checker reads the world it is part of after every event (a checker \
         that owned a copy would double the simulator's memory and time)",
    ),
    (
        "model",
        &["model", "properties"],
        "stateright's Model::properties lists properties that evaluate that same model",
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comment lines and without an inline `mod tests`.
fn code_of(text: &str) -> String {
    let cut = text.find("#[cfg(test)]\nmod tests {").unwrap_or(text.len());
    text[..cut]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Crate source folders of the repository (every `src/` beside a `Cargo.toml`).
fn crates(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for f in &files {
        let mut p = f.parent();
        while let Some(d) = p {
            if d.file_name().is_some_and(|n| n == "src")
                && d.parent().is_some_and(|c| c.join("Cargo.toml").is_file())
            {
                dirs.insert(d.to_path_buf());
                break;
            }
            p = d.parent();
        }
    }
    dirs.into_iter().collect()
}

fn is_test_file(rel: &Path) -> bool {
    rel.components()
        .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "tests.rs")
}

/// Runs the checks; an error lists every problem.
pub fn layout(_args: &[String]) -> Result {
    let root = root();
    let mut problems = Vec::new();
    let mut checked = 0;
    for src in crates(&root) {
        let krate = src
            .parent()
            .and_then(|c| c.strip_prefix(&root).ok())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let rel = f.strip_prefix(&src).unwrap_or(f);
            if is_test_file(rel) {
                continue;
            }
            let text = std::fs::read_to_string(f).unwrap_or_default();
            checked += 1;
            // Inline unit tests do not count.
            let cut = text.find("#[cfg(test)]\nmod tests {").unwrap_or(text.len());
            let lines = text[..cut].lines().count();
            if lines > MAX_LINES {
                problems.push(format!(
                    "{}: {lines} lines (at most {MAX_LINES} outside tests)",
                    f.strip_prefix(&root).unwrap_or(f).display()
                ));
            }
            let first = rel
                .components()
                .next()
                .map(|c| {
                    c.as_os_str()
                        .to_string_lossy()
                        .trim_end_matches(".rs")
                        .to_string()
                })
                .unwrap_or_default();
            if ["lib", "main", "bin"].contains(&first.as_str()) {
                continue;
            }
            let code = code_of(&text);
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != first {
                    edges.entry(first.clone()).or_default().insert(name);
                }
            }
        }
        for cycle in cycles(&edges) {
            let allowed = ALLOWED_CYCLES.iter().any(|(c, mods, _)| {
                *c == krate && cycle.iter().all(|m| mods.contains(&m.as_str()))
            });
            if !allowed {
                problems.push(format!("{krate}: import cycle {}", cycle.join(" -> ")));
            }
        }
    }
    if problems.is_empty() {
        println!(
            "layout: {checked} source files, none over {MAX_LINES} lines, no import cycle but {} documented",
            ALLOWED_CYCLES.len()
        );
        Ok(())
    } else {
        Err(format!("layout:\n  {}", problems.join("\n  ")))
    }
}

/// Every elementary cycle's set of modules (as a sorted, deduplicated list).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut steps = 0;
        while let Some((node, path)) = stack.pop() {
            steps += 1;
            if steps > 100_000 {
                break;
            }
            for next in edges.get(&node).into_iter().flatten() {
                if next == start {
                    let mut c = path.clone();
                    c.sort();
                    c.dedup();
                    found.insert(c);
                } else if !path.contains(next) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found
}
