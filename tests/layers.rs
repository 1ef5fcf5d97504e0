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
    &["kernels", "access", "config", "announce", "audit"],
    &["ingest", "chunk"],
    &["embed"],
    &["store"],
    &["search"],
    &["generate"],
    &["prompt"],
    &["answer"],
    &["engine"],
    &["api", "wire", "keys"],
    &["watch", "eval"],
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

/// The top-level modules that `text` (a file of `module`) names.
fn uses(text: &str, module: &str, roots: &BTreeMap<String, String>) -> BTreeSet<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    // Code only: a doc link may name any module.
    let code: String = code
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
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
