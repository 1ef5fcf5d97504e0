//! `lore snapshot`: a copy of the index that opens as the same index, made
//! into a new directory only. (Replicas behind HAProxy under load:
//! scripts/replica-checks.sh, run by `make test`.)

use crate::util::{fails, ingested, json, lore, status};

#[test]
fn a_snapshot_opens_as_the_same_index_and_never_overwrites() {
    let (tmp, index) = ingested("corpora/tiny");
    lore(&index)
        .args(["key", "create", "--role", "read"])
        .output()
        .unwrap();
    let snapshot = tmp.path().join("snapshot");
    let report = json(lore(&index).arg("snapshot").arg(&snapshot).arg("--json"));
    assert!(report["files"].as_u64().unwrap() > 3, "{report}");
    let (a, b) = (status(&index), status(&snapshot));
    assert_eq!(
        (&a["documents"], &a["chunks"]),
        (&b["documents"], &b["chunks"])
    );
    assert_eq!(b["consistent"], true, "{b}");
    assert!(
        snapshot.join("keys.json").exists(),
        "the key store was left out"
    );
    let top = |dir: &std::path::Path| {
        json(lore(dir).args(["search", "how much coffee for a pour-over", "--json"]))["hits"][0]
            ["chunk_id"]
            .clone()
    };
    assert_eq!(top(&index), top(&snapshot));
    let (code, stderr) = fails(lore(&index).arg("snapshot").arg(&snapshot));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
