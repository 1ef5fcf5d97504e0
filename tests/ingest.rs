//! `lore ingest`, `remove` and `status` through the built CLI: formats, bad
//! input, incremental runs, removal and the embedder check.

use std::path::Path;

use crate::util::{copy_dir, fails, ingested, json, lore, root, run_ok, status};

fn skipped<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("{name} not in skipped: {report}"))
}

fn skipped_reason(report: &serde_json::Value, name: &str) -> String {
    skipped(report, name)["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The machine-readable kind of a skip.
fn skipped_kind(report: &serde_json::Value, name: &str) -> String {
    skipped(report, name)["kind"].as_str().unwrap().to_string()
}

#[test]
fn unchanged_corpus_is_not_reembedded() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    let corpus = root().join("corpora/tiny");
    let first = json(lore(&index).arg("ingest").arg(&corpus).arg("--json"));
    assert_eq!(first["added"], 7, "{first}");
    assert!(first["chunks_embedded"].as_u64().unwrap() >= 7);
    assert_eq!(first["skipped"].as_array().unwrap().len(), 0, "{first}");
    let second = json(lore(&index).arg("ingest").arg(&corpus).arg("--json"));
    assert_eq!(second["chunks_embedded"], 0, "{second}");
    assert_eq!(second["unchanged"], 7, "{second}");
    let s = status(&index);
    assert_eq!(s["consistent"], true, "{s}");
    assert_eq!(s["documents"], 7);
    assert_eq!(s["chunks"], s["vectors"]);
    assert_eq!(s["chunks"], s["keyword_docs"]);
    assert_eq!(s["embedder"]["dim"], 384);
}

#[test]
fn bad_files_are_skipped_with_reasons_and_good_files_indexed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("docs");
    copy_dir(&root().join("corpora/tiny"), &dir);
    std::fs::write(dir.join("image.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    std::fs::write(dir.join("latin1.txt"), b"caf\xe9 au lait").unwrap();
    std::fs::write(dir.join("empty.md"), b"").unwrap();
    std::fs::write(
        dir.join("broken.pdf"),
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ntruncated",
    )
    .unwrap();
    std::fs::write(dir.join("huge.txt"), "word ".repeat(40_000)).unwrap();
    std::os::unix::fs::symlink(&dir, dir.join("loop")).unwrap();
    std::os::unix::fs::symlink(dir.join("missing.md"), dir.join("dangling.md")).unwrap();
    // Permissions do not stop root, so the unreadable case runs for other users.
    let unreadable = dir.join("secret.md");
    std::fs::write(&unreadable, "# Secret").unwrap();
    std::fs::set_permissions(
        &unreadable,
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let readable_anyway = std::fs::read(&unreadable).is_ok();
    let report = json(
        lore(&tmp.path().join("index"))
            .arg("ingest")
            .arg(&dir)
            .args(["--max-file-bytes", "100000", "--json"]),
    );
    // latin1.txt is decoded now; the symlink loop is not walked at all.
    let added = if readable_anyway { 9 } else { 8 };
    assert_eq!(report["added"], added, "{report}");
    if !readable_anyway {
        assert!(skipped_reason(&report, "secret.md").contains("cannot read"));
    }
    assert!(skipped_reason(&report, "image.png").contains("binary"));
    let skipped = report["skipped"].to_string();
    assert!(!skipped.contains("latin1.txt"), "{skipped}");
    assert!(skipped_reason(&report, "empty.md").contains("empty"));
    assert!(skipped_reason(&report, "broken.pdf").contains("PDF"));
    assert!(skipped_reason(&report, "huge.txt").contains("limit"));
    assert!(!skipped.contains("/loop"), "{skipped}");
    assert!(!skipped_reason(&report, "dangling.md").is_empty());
    let kinds = [
        ("image.png", "binary"),
        ("empty.md", "empty"),
        ("broken.pdf", "malformed"),
        ("huge.txt", "too_large"),
        ("dangling.md", "unreadable"),
    ];
    for (name, kind) in kinds {
        assert_eq!(skipped_kind(&report, name), kind, "{name}: {report}");
    }
    assert_eq!(status(&tmp.path().join("index"))["consistent"], true);
}

#[test]
fn changed_files_are_replaced_and_vanished_files_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("docs");
    copy_dir(&root().join("corpora/tiny"), &dir);
    let index = tmp.path().join("index");
    json(lore(&index).arg("ingest").arg(&dir).arg("--json"));
    std::fs::write(
        dir.join("roasting.md"),
        "# Roasting\n\nThe zeppelin roaster now runs on Fridays only.\n",
    )
    .unwrap();
    std::fs::remove_file(dir.join("suppliers.txt")).unwrap();
    let report = json(lore(&index).arg("ingest").arg(&dir).arg("--json"));
    assert_eq!(report["updated"], 1, "{report}");
    assert_eq!(report["removed"], 1, "{report}");
    assert_eq!(report["unchanged"], 5, "{report}");

    let s = status(&index);
    assert_eq!(s["consistent"], true, "{s}");
    assert_eq!(s["documents"], 6);
    // Same counts as a fresh ingest of the folder as it is now.
    let fresh = tmp.path().join("fresh");
    json(lore(&fresh).arg("ingest").arg(&dir).arg("--json"));
    let f = status(&fresh);
    for key in ["documents", "chunks", "vectors", "keyword_docs"] {
        assert_eq!(s[key], f[key], "{key}: {s} vs {f}");
    }
    // Old text is gone from both retrievers, the new text is found.
    for mode in ["bm25", "dense"] {
        let hits = json(lore(&index).args([
            "search",
            "Probat roaster Tuesdays",
            "-k",
            "10",
            "--mode",
            mode,
            "--json",
        ]));
        for hit in hits["hits"].as_array().unwrap() {
            assert!(
                !hit["text"].as_str().unwrap().contains("Probat"),
                "{mode}: {hit}"
            );
            assert!(
                !hit["path"].as_str().unwrap().ends_with("suppliers.txt"),
                "{mode}: {hit}"
            );
        }
    }
    let hits = json(lore(&index).args(["search", "zeppelin", "--mode", "bm25", "--json"]));
    assert!(
        hits["hits"][0]["text"]
            .as_str()
            .unwrap()
            .contains("zeppelin")
    );
}

#[test]
fn remove_by_path_and_by_document_id() {
    let (tmp, index) = ingested("corpora/tiny");
    let corpus = root().join("corpora/tiny");
    let removed = json(
        lore(&index)
            .arg("remove")
            .arg(corpus.join("shop.html"))
            .arg("--json"),
    );
    assert_eq!(removed["files"], 1);
    let hit = json(lore(&index).args(["search", "espresso dose grams", "-k", "1", "--json"]));
    let doc_id = hit["hits"][0]["doc_id"].as_str().unwrap().to_string();
    let removed = json(lore(&index).args(["remove", &doc_id, "--json"]));
    assert_eq!(removed["documents"], 1);
    let s = status(&index);
    assert_eq!(s["documents"], 5, "{s}");
    assert_eq!(s["consistent"], true, "{s}");
    // A file deleted from disk is removed by its path, relative or not.
    let docs = tmp.path().join("docs");
    copy_dir(&corpus, &docs);
    json(lore(&index).arg("ingest").arg(&docs).arg("--json"));
    std::fs::remove_file(docs.join("staff.md")).unwrap();
    let removed = json(lore(&index).args(["remove", "docs/./sub/../staff.md", "--json"]));
    assert_eq!(removed["files"], 1, "{removed}");
    let (code, stderr) = fails(lore(&index).args(["remove", "no-such-thing"]));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not found"), "{stderr}");
    // Commands that only use an index do not create one.
    let nowhere = tmp.path().join("nothing-here");
    let (code, stderr) = fails(lore(&nowhere).arg("status"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("lore ingest"), "{stderr}");
    assert!(!nowhere.exists());
}

#[test]
fn index_built_with_another_embedder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    json(
        lore(&index)
            .arg("ingest")
            .arg(root().join("corpora/tiny/brewing.md"))
            .arg("--json"),
    );
    let manifest = index.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("all-minilm-l6-v2-", "other-model-")).unwrap();
    let out = lore(&index).args(["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("other-model-") && stderr.contains("re-ingest"),
        "{stderr}"
    );
}

#[test]
fn handbook_formats_all_load() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    let docs = root().join("corpora/handbook/docs");
    let report = json(lore(&index).arg("ingest").arg(&docs).arg("--json"));
    assert_eq!(report["skipped"].as_array().unwrap().len(), 0, "{report}");
    let files = walk_count(&docs);
    assert_eq!(report["added"].as_u64().unwrap() as usize, files);
    // Text from a PDF and from HTML (not its script) is searchable.
    let hits = json(lore(&index).args(["search", "hotel per night London", "-k", "1", "--json"]));
    assert!(
        hits["hits"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("travel-policy.pdf"),
        "{hits}"
    );
    let hits = json(lore(&index).args(["search", "window.analytics", "--mode", "bm25", "--json"]));
    assert!(hits["hits"].as_array().unwrap().is_empty(), "{hits}");
}

fn walk_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk_count(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn help_lists_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_ok(lore(&tmp.path().join("index")).arg("--help"));
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["ingest", "remove", "search", "status", "bench"] {
        assert!(help.contains(cmd), "{help}");
    }
}
