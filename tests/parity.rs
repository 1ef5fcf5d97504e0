//! One interface, local or remote: the same CLI scenario run against an
//! index this process opens and against one a running `lore serve` holds
//! gives the same outputs, errors and exit codes.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::serve::start_full;
use crate::util::{copy_dir, lore, root};

/// Drops what differs between two runs of the same work (times).
fn untimed(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| key != "seconds" && key != "timings");
            map.values_mut().for_each(untimed);
        }
        Value::Array(items) => items.iter_mut().for_each(untimed),
        _ => {}
    }
}

/// What one step printed: its exit code, its JSON (untimed) or its error
/// line, and the lines it reported skipping (as JSON lines with `--json`).
fn outcome(out: &Output) -> (Option<i32>, Value, Vec<String>) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = |prefix: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    let mut printed = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| Value::String(lines("lore: error:").join("\n")));
    untimed(&mut printed);
    let skipped = [lines("lore: skipping"), lines(r#"{"skipped":"#)].concat();
    (out.status.code(), printed, skipped)
}

/// Runs the scenario on `index`; one outcome per step.
fn scenario(index: &Path, docs: &Path) -> Vec<(Option<i32>, Value, Vec<String>)> {
    let docs = docs.to_str().unwrap();
    let steps: [&[&str]; 7] = [
        &["ingest", docs, "--json"],
        &[
            "search",
            "Which days does the roaster run?",
            "-k",
            "3",
            "--json",
        ],
        &[
            "ask",
            "Which days does the roaster run?",
            "--generator",
            "light",
            "--max-tokens",
            "40",
            "--json",
        ],
        &["remove", &format!("{docs}/roasting.md"), "--json"],
        &["search", "Which days does the roaster run?", "--json"],
        // Errors: the request's fault (2) and a missing document (1).
        &["search", "   ", "--json"],
        &["remove", "never-ingested.md", "--json"],
    ];
    steps
        .iter()
        .map(|args| outcome(&lore(index).args(*args).output().unwrap()))
        .collect()
}

#[test]
fn the_cli_gives_the_same_results_on_a_local_index_and_through_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    copy_dir(&root().join("corpora/tiny"), &docs);
    std::fs::write(docs.join("broken.pdf"), b"%PDF-1.4 not really").unwrap();
    let (local, served) = (dir.path().join("local"), dir.path().join("served"));
    let here = scenario(&local, &docs);
    let server = start_full(&served, "", &[], None, "light");
    let there = scenario(&served, &docs);
    drop(server);
    assert_eq!(here[0].2.len(), 1, "the broken file is reported: {here:?}");
    assert_eq!(here[5].0, Some(2), "{:?}", here[5]);
    assert_eq!(here[6].0, Some(1), "{:?}", here[6]);
    for (step, (local, remote)) in here.iter().zip(&there).enumerate() {
        assert_eq!(local, remote, "step {step} differs through the server");
    }
}
