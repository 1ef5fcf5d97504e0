//! The house rule of ARCHITECTURE.md, checked: every module of `src/` uses
//! only modules below it in [`FLOORS`], so arrows point down and there are
//! no import circles. Test modules (`#[cfg(test)] mod tests`, at the end of
//! a file) may reach up: they exercise a module with what sits above it;
//! doc comments may link anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::util::root;

/// `src/`'s modules from the ground up; modules on one floor may not use
/// each other.
const FLOORS: &[&[&str]] = &[
    &["error"],
    &["types"],
    &["kernels", "sched", "access", "config", "announce", "audit"],
    &["ingest", "chunk"],
    &["embed"],
    &["store"],
    &["search"],
    &["generate"],
    &["prompt"],
    &["answer"],
    &["engine"],
    &["api", "wire", "keys"],
    &["watch", "eval", "mcp", "doctor"],
    &["bench"],
    &["client"],
    &["server"],
    &["cli", "main"],
];

fn floor_of(module: &str) -> usize {
    FLOORS
        .iter()
        .position(|floor| floor.contains(&module))
        .unwrap_or_else(|| panic!("src/{module} is on no floor of tests/layers.rs"))
}

/// What `lib.rs` re-exports at the crate root, by name: the module each
/// name comes from (`crate::Engine` is a use of `engine`).
fn root_names(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let text = lib.replace('\n', " ");
    for statement in text.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let (module, items) = rest.split_once("::").unwrap();
        for item in items
            .trim_matches(|c| c == '{' || c == '}' || c == ' ')
            .split(',')
        {
            let name = item.trim().rsplit("::").next().unwrap().to_string();
            if !name.is_empty() {
                names.insert(name, module.trim().to_string());
            }
        }
    }
    names
}

/// `text` without its test modules (from the first `#[cfg(test)]` module
/// on) and comment lines: a doc link may name any module.
fn code_of(text: &str) -> String {
    let end = ["mod ", "pub mod ", "pub(crate) mod "]
        .iter()
        .filter_map(|m| text.find(&format!("#[cfg(test)]\n{m}")))
        .min()
        .unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules that `text` (a file of `module`) names.
fn uses(text: &str, module: &str, roots: &BTreeMap<String, String>) -> BTreeSet<String> {
    let code = code_of(text);
    let prefix = if matches!(module, "cli" | "main") {
        "lore::"
    } else {
        "crate::"
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let name: String = code[at + prefix.len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let used = roots.get(&name).cloned().unwrap_or(name);
        if used != module && !used.is_empty() {
            found.insert(used);
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
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
fn every_module_uses_only_modules_below_it() {
    let src = root().join("src");
    let roots = root_names(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap();
        let module = first.as_os_str().to_str().unwrap().trim_end_matches(".rs");
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for used in uses(&text, module, &roots) {
            if floor_of(&used) >= floor_of(module) {
                upward.push(format!("{} uses {used}", relative.display()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "arrows pointing up or sideways:\n{}",
        upward.join("\n")
    );
}

/// Every file of `src/` as a module path (`server::routes`, `engine`).
fn modules() -> BTreeMap<Vec<String>, String> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let relative = file.strip_prefix(&src).unwrap().with_extension("");
            let mut path: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_str().unwrap().to_string())
                .collect();
            if path
                .last()
                .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
            {
                path.pop();
            }
            (path, code_of(&std::fs::read_to_string(&file).unwrap()))
        })
        .collect()
}

/// The files `code` (of the file `module`) names through `crate::`,
/// `super::` or `lore::` paths, other than its own ancestors or children.
fn file_uses(
    module: &[String],
    code: &str,
    known: &BTreeMap<Vec<String>, String>,
) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    for prefix in ["crate::", "super::", "lore::"] {
        for (at, _) in code.match_indices(prefix) {
            if at > 0 && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut path: Vec<String> = match prefix {
                "super::" => module[..module.len().saturating_sub(1)].to_vec(),
                _ => Vec::new(),
            };
            path.extend(
                code[at + prefix.len()..]
                    .split("::")
                    .map(|s| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_'))
                    .map(String::from_iter)
                    .take_while(|s| s.starts_with(|c: char| c.is_ascii_lowercase())),
            );
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| known.contains_key(p));
            if let Some(target) = target
                && !target.starts_with(module)
                && !module.starts_with(&target)
            {
                found.insert(target);
            }
        }
    }
    found
}

#[test]
fn no_two_files_import_each_other_even_through_others() {
    let known = modules();
    let graph: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> = known
        .iter()
        .map(|(module, code)| (module, file_uses(module, code, &known)))
        .collect();
    // A circle is a file that reaches itself.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&Vec<String>> = graph[start].iter().collect();
        while let Some(next) = todo.pop() {
            assert!(
                next != *start,
                "{} reaches itself through its imports",
                start.join("::")
            );
            if seen.insert(next.clone()) {
                todo.extend(graph.get(next).into_iter().flatten());
            }
        }
    }
}
